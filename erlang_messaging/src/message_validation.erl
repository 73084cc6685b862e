%% Pure validation of decoded JSON request bodies (maps with binary keys).
%% Returns the normalised internal form, or the per-field problems so the
%% HTTP layer can answer 400 invalid_field with "fields".
-module(message_validation).

-export([message/1, broadcast/1, ack_ids/1, priority/1]).

-define(MAX_BROADCAST_ID_LEN, 64).

%% @doc A message from POST /messages. The result lacks created_at (and id
%% when the client gave none); messaging_http fills them in.
-spec message(term()) -> {ok, map()} | {error, #{binary() => binary()}}.
message(Body) when is_map(Body) ->
    Checks = [{id, fun optional_uuid/1, <<"id">>},
              {conversation_id, fun optional_integer/1, <<"conversation_id">>},
              {sender_id, fun required_integer/1, <<"sender_id">>},
              {receiver_id, fun required_integer/1, <<"receiver_id">>},
              {text, fun required_text/1, <<"text">>},
              {priority, fun priority_field/1, <<"priority">>}],
    run_checks(Checks, Body);
message(_NotObject) ->
    {error, #{<<"body">> => <<"must be a JSON object">>}}.

%% @doc A broadcast from POST /broadcast.
-spec broadcast(term()) -> {ok, map()} | {error, #{binary() => binary()}}.
broadcast(Body) when is_map(Body) ->
    Checks = [{id, fun optional_broadcast_id/1, <<"id">>},
              {sender_id, fun required_integer/1, <<"sender_id">>},
              {user_ids, fun user_ids/1, <<"user_ids">>},
              {audience, fun optional_string/1, <<"audience">>},
              {text, fun required_text/1, <<"text">>},
              {priority, fun priority_field/1, <<"priority">>}],
    run_checks(Checks, Body);
broadcast(_NotObject) ->
    {error, #{<<"body">> => <<"must be a JSON object">>}}.

%% @doc The "ids" of an ack body.
-spec ack_ids(term()) -> {ok, [binary()]} | {error, #{binary() => binary()}}.
ack_ids(#{<<"ids">> := Ids}) when is_list(Ids) ->
    case lists:all(fun is_binary/1, Ids) of
        true -> {ok, Ids};
        false -> {error, #{<<"ids">> => <<"must be a list of message ids">>}}
    end;
ack_ids(_) ->
    {error, #{<<"ids">> => <<"must be a list of message ids">>}}.

-spec priority(term()) -> {ok, binary()} | error.
priority(P) when P =:= <<"high">>; P =:= <<"normal">>; P =:= <<"low">> -> {ok, P};
priority(_) -> error.

%%====================================================================
%% Field checks: Value (or missing) -> {ok, Normalised} | skip | {error, Why}
%%====================================================================

run_checks(Checks, Body) ->
    {Fields, Errors} = lists:foldl(
        fun({Key, Check, Name}, {Ok, Bad}) ->
                case Check(maps:get(Name, Body, missing)) of
                    {ok, V} -> {Ok#{Key => V}, Bad};
                    skip -> {Ok, Bad};
                    {error, Why} -> {Ok, Bad#{Name => Why}}
                end
        end, {#{}, #{}}, Checks),
    case map_size(Errors) of
        0 -> {ok, Fields};
        _ -> {error, Errors}
    end.

optional_uuid(missing) -> skip;
optional_uuid(null) -> skip;
optional_uuid(Id) ->
    case message_ids:is_uuid(Id) of
        true -> {ok, string:lowercase(Id)};
        false -> {error, <<"must be a UUID string">>}
    end.

optional_integer(missing) -> {ok, null};
optional_integer(null) -> {ok, null};
optional_integer(N) when is_integer(N) -> {ok, N};
optional_integer(_) -> {error, <<"must be an integer or null">>}.

required_integer(N) when is_integer(N), N > 0 -> {ok, N};
required_integer(missing) -> {error, <<"is required">>};
required_integer(_) -> {error, <<"must be a positive integer">>}.

required_text(T) when is_binary(T), byte_size(T) > 0 -> {ok, T};
required_text(missing) -> {error, <<"is required">>};
required_text(_) -> {error, <<"must be a non-empty string">>}.

optional_string(missing) -> {ok, null};
optional_string(null) -> {ok, null};
optional_string(S) when is_binary(S) -> {ok, S};
optional_string(_) -> {error, <<"must be a string">>}.

priority_field(missing) -> {ok, <<"normal">>};
priority_field(null) -> {ok, <<"normal">>};
priority_field(P) ->
    case priority(P) of
        {ok, Prio} -> {ok, Prio};
        error -> {error, <<"must be one of high, normal, low">>}
    end.

%% Broadcast ids go into a URL path towards Django, so keep them plain.
optional_broadcast_id(missing) -> skip;
optional_broadcast_id(null) -> skip;
optional_broadcast_id(Id) when is_binary(Id), byte_size(Id) > 0,
                               byte_size(Id) =< ?MAX_BROADCAST_ID_LEN ->
    case lists:all(fun safe_id_char/1, binary_to_list(Id)) of
        true -> {ok, Id};
        false -> {error, <<"may only contain letters, digits, '-' and '_'">>}
    end;
optional_broadcast_id(_) ->
    {error, <<"must be a string of 1 to 64 characters">>}.

safe_id_char(C) ->
    (C >= $a andalso C =< $z) orelse (C >= $A andalso C =< $Z)
        orelse (C >= $0 andalso C =< $9) orelse C =:= $- orelse C =:= $_.

user_ids(L) when is_list(L) ->
    case lists:all(fun(U) -> is_integer(U) andalso U > 0 end, L) of
        true -> {ok, unique(L)};
        false -> {error, <<"must be a list of positive integers">>}
    end;
user_ids(missing) -> {error, <<"is required">>};
user_ids(_) -> {error, <<"must be a list of positive integers">>}.

%% Keeps first occurrences in order: each recipient gets the broadcast once.
unique(L) ->
    {Rev, _} = lists:foldl(fun(U, {Acc, Seen}) ->
                                   case maps:is_key(U, Seen) of
                                       true -> {Acc, Seen};
                                       false -> {[U | Acc], Seen#{U => true}}
                                   end
                           end, {[], #{}}, L),
    lists:reverse(Rev).
