%% Pure validation of decoded JSON request bodies (maps with binary keys).
%% Returns the normalised internal form, or the per-field problems so the
%% HTTP layer can answer 400 invalid_field with "fields".
%%
%% Whatever passes here must be storable by Django (messaging.services
%% persist_messages) and PostgreSQL, or it would come back from persistence
%% as a poison message: texts are valid UTF-8 without NUL, not blank and at
%% most MaxTextChars characters once trimmed, as Django's _clean_text counts
%% them; ids fit PostgreSQL's bigint and are positive.
-module(message_validation).

-export([message/1, message/2, broadcast/1, broadcast/2, ack_ids/1, priority/1]).

-define(MAX_BROADCAST_ID_LEN, 64).
%% PostgreSQL's bigint, the type of Django's user, conversation ... ids.
-define(MAX_BIGINT, 9223372036854775807).
-define(IS_ID(N), (is_integer(N) andalso N > 0 andalso N =< ?MAX_BIGINT)).

%% @doc message/2 with the configured MESSAGE_MAX_TEXT_CHARS.
-spec message(term()) -> {ok, map()} | {error, #{binary() => binary()}}.
message(Body) ->
    message(Body, messaging_config:get(message_max_text_chars)).

%% @doc A message from POST /messages. The result lacks created_at (and id
%% when the client gave none); messaging_http fills them in.
-spec message(term(), pos_integer()) -> {ok, map()} | {error, #{binary() => binary()}}.
message(Body, MaxTextChars) when is_map(Body) ->
    Checks = [{id, fun optional_uuid/1, <<"id">>},
              {conversation_id, fun optional_id/1, <<"conversation_id">>},
              {sender_id, fun required_id/1, <<"sender_id">>},
              {receiver_id, fun required_id/1, <<"receiver_id">>},
              {text, fun(Text) -> required_text(Text, MaxTextChars) end, <<"text">>},
              {priority, fun priority_field/1, <<"priority">>}],
    run_checks(Checks, Body);
message(_NotObject, _MaxTextChars) ->
    {error, #{<<"body">> => <<"must be a JSON object">>}}.

%% @doc broadcast/2 with the configured MESSAGE_MAX_TEXT_CHARS.
-spec broadcast(term()) -> {ok, map()} | {error, #{binary() => binary()}}.
broadcast(Body) ->
    broadcast(Body, messaging_config:get(message_max_text_chars)).

%% @doc A broadcast from POST /broadcast.
-spec broadcast(term(), pos_integer()) -> {ok, map()} | {error, #{binary() => binary()}}.
broadcast(Body, MaxTextChars) when is_map(Body) ->
    Checks = [{id, fun optional_broadcast_id/1, <<"id">>},
              {sender_id, fun required_id/1, <<"sender_id">>},
              {user_ids, fun user_ids/1, <<"user_ids">>},
              {audience, fun optional_string/1, <<"audience">>},
              {text, fun(Text) -> required_text(Text, MaxTextChars) end, <<"text">>},
              {priority, fun priority_field/1, <<"priority">>}],
    run_checks(Checks, Body);
broadcast(_NotObject, _MaxTextChars) ->
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

optional_id(missing) -> {ok, null};
optional_id(null) -> {ok, null};
optional_id(N) when ?IS_ID(N) -> {ok, N};
optional_id(_) -> {error, <<"must be null or a positive integer up to 9223372036854775807">>}.

required_id(N) when ?IS_ID(N) -> {ok, N};
required_id(missing) -> {error, <<"is required">>};
required_id(_) -> {error, <<"must be a positive integer up to 9223372036854775807">>}.

required_text(Text, MaxChars) when is_binary(Text) ->
    case trimmed_length(Text) of
        {ok, 0} -> {error, <<"must not be blank">>};
        {ok, Chars} when Chars > MaxChars ->
            {error, <<"must be at most ", (integer_to_binary(MaxChars))/binary, " characters">>};
        {ok, _Chars} -> {ok, Text};
        {error, Why} -> {error, Why}
    end;
required_text(missing, _MaxChars) -> {error, <<"is required">>};
required_text(_, _MaxChars) -> {error, <<"must be a non-empty string">>}.

%% The number of characters Django keeps: Python's str.strip() drops
%% whitespace at both ends, len() counts code points. One pass: Kept counts
%% the characters from the first non-space to the last one seen so far,
%% Pending the spaces since then (kept only if more text follows). The
%% binary match refuses what is not UTF-8 (surrogates included), which
%% PostgreSQL cannot store, and so is NUL.
trimmed_length(Text) ->
    trimmed_length(Text, 0, 0).

trimmed_length(<<0, _/binary>>, _Kept, _Pending) ->
    {error, <<"must not contain NUL (U+0000)">>};
trimmed_length(<<C/utf8, Rest/binary>>, Kept, Pending) ->
    case is_python_space(C) of
        true when Kept =:= 0 -> trimmed_length(Rest, 0, 0);
        true -> trimmed_length(Rest, Kept, Pending + 1);
        false -> trimmed_length(Rest, Kept + Pending + 1, 0)
    end;
trimmed_length(<<>>, Kept, _Pending) ->
    {ok, Kept};
trimmed_length(_NotUtf8, _Kept, _Pending) ->
    {error, <<"must be valid UTF-8">>}.

%% Exactly the characters for which Python's str.isspace() is true.
is_python_space(C) when C >= 16#09, C =< 16#0D; C >= 16#1C, C =< 16#20 -> true;
is_python_space(C) when C =:= 16#85; C =:= 16#A0; C =:= 16#1680 -> true;
is_python_space(C) when C >= 16#2000, C =< 16#200A -> true;
is_python_space(C) when C =:= 16#2028; C =:= 16#2029; C =:= 16#202F; C =:= 16#205F;
                        C =:= 16#3000 -> true;
is_python_space(_) -> false.

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
    case lists:all(fun(U) -> ?IS_ID(U) end, L) of
        true -> {ok, unique(L)};
        false -> {error, <<"must be a list of positive integers up to 9223372036854775807">>}
    end;
user_ids(missing) -> {error, <<"is required">>};
user_ids(_) -> {error, <<"must be a list of positive integers up to 9223372036854775807">>}.

%% Keeps first occurrences in order: each recipient gets the broadcast once.
unique(L) ->
    {Rev, _} = lists:foldl(fun(U, {Acc, Seen}) ->
                                   case maps:is_key(U, Seen) of
                                       true -> {Acc, Seen};
                                       false -> {[U | Acc], Seen#{U => true}}
                                   end
                           end, {[], #{}}, L),
    lists:reverse(Rev).
