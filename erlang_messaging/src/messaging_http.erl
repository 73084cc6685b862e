%% The HTTP API (mochiweb). Every request runs in mochiweb's connection
%% process; handlers are wrapped so bad input never takes the listener down
%% and unexpected crashes become a 500 JSON error.
%%
%% POST /messages answers 202 only after the message is synced to the WAL.
%% Note: mochiweb 3.x on OTP 25 needs mochiweb_request:F(..., Req) calls;
%% the old Req:F(...) tuple-module style does not work.
-module(messaging_http).

-export([start_link/0, loop/1]).

-define(JSON, [{"Content-Type", "application/json"}]).
-define(TOKEN_HEADER, "x-messaging-token").

start_link() ->
    persistent_term:put({?MODULE, max_pending}, messaging_config:get(max_pending)),
    persistent_term:put({?MODULE, max_body}, messaging_config:get(max_body_bytes)),
    %% Read on every request; the config lookup goes through the OS env.
    persistent_term:put({?MODULE, secret}, messaging_config:get(shared_secret)),
    mochiweb_http:start_link([{name, ?MODULE},
                              {port, messaging_config:get(http_port)},
                              {ip, messaging_config:get(bind_ip)},
                              {loop, fun ?MODULE:loop/1},
                              {max, messaging_config:get(max_connections)},
                              {backlog, 1024},
                              {acceptor_pool_size, 100},
                              {nodelay, true},
                              %% The kernel sizes the receive window itself; the
                              %% driver's user-space buffer stays small, since
                              %% every idle WebSocket keeps one (mochiweb's
                              %% default is 8 KB). Bodies still arrive whole:
                              %% recv(Length) sizes its own buffer.
                              {recbuf, undefined},
                              {buffer, 1024}]).

%% @doc mochiweb loop: one call per request on a (keep-alive) connection.
loop(Req) ->
    Method = mochiweb_request:get(method, Req),
    Path = string:lexemes(mochiweb_request:get(path, Req), "/"),
    case Path of
        %% The WebSocket module takes the connection over and exits normally
        %% at the end, so it must not run inside the catch-all below.
        ["ws"] when Method =:= 'GET' -> messaging_ws:handle_upgrade(Req);
        _ -> safe_handle(Method, Path, Req)
    end.

safe_handle(Method, Path, Req) ->
    try
        handle(Method, Path, Req)
    catch
        throw:{http_error, Code, ErrCode, Message, Fields} ->
            error_response(Code, ErrCode, Message, Fields, Req);
        throw:responded ->
            ok;
        Class:Reason:Stack ->
            logger:error("request ~p ~p crashed: ~p:~p ~p", [Method, Path, Class, Reason, Stack]),
            error_response(500, <<"internal_error">>, <<"internal server error">>, #{}, Req)
    end.

%%====================================================================
%% Routing
%%====================================================================

handle('GET', ["health"], Req) ->
    health(Req);
handle(Method, Path, Req) ->
    case allowed_methods(Path) of
        [] -> fail(404, <<"not_found">>, <<"no such endpoint">>);
        Allowed ->
            lists:member(Method, Allowed) orelse method_not_allowed(Allowed, Req),
            require_token(Req),
            endpoint(Method, Path, Req)
    end.

allowed_methods(["health"]) -> ['GET'];
allowed_methods(["ws"]) -> ['GET'];
allowed_methods(["messages"]) -> ['POST'];
allowed_methods(["messages", "batch"]) -> ['POST'];
allowed_methods(["queues", _User]) -> ['GET'];
allowed_methods(["queues", _User, "ack"]) -> ['POST'];
allowed_methods(["broadcast"]) -> ['POST'];
allowed_methods(["stats"]) -> ['GET'];
allowed_methods(_) -> [].

endpoint('POST', ["messages"], Req) -> post_message(Req);
endpoint('POST', ["messages", "batch"], Req) -> post_batch(Req);
endpoint('GET', ["queues", User], Req) -> get_queue(user_id(User), Req);
endpoint('POST', ["queues", User, "ack"], Req) -> post_ack(user_id(User), Req);
endpoint('POST', ["broadcast"], Req) -> post_broadcast(Req);
endpoint('GET', ["stats"], Req) -> json(200, stats_collector:snapshot(), Req).

%%====================================================================
%% Endpoints
%%====================================================================

health(Req) ->
    json(200, #{status => ok, uptime_seconds => stats_collector:uptime_seconds(),
                django_reachable => message_persistence:django_reachable(),
                node => atom_to_binary(node())}, Req).

post_message(Req) ->
    Fields = validated(message_validation:message(read_json(Req))),
    refuse_if_overloaded(),
    Msg = new_message(Fields, now_iso8601()),
    Dropped = case message_ids:claim(maps:get(id, Msg)) of
                  false -> 0;
                  true -> accept_one(Msg)
              end,
    mochiweb_request:respond({202, ?JSON, accepted_json(Msg, Dropped)}, Req).

%% The same document as jiffy:encode(accepted_body(Msg, Dropped)), built
%% directly: jiffy costs several microseconds even for four keys. The id is a
%% validated UUID and the priority one of three words, so nothing needs
%% escaping; anything else goes through jiffy.
accepted_json(#{id := Id, priority := Prio} = Msg, Dropped)
  when (Prio =:= <<"normal">> orelse Prio =:= <<"high">> orelse Prio =:= <<"low">>),
       is_integer(Dropped), byte_size(Id) =:= 36 ->
    case message_ids:is_uuid(Id) of
        true ->
            <<"{\"id\":\"", Id/binary, "\",\"status\":\"accepted\",\"priority\":\"", Prio/binary,
              "\",\"dropped\":", (integer_to_binary(Dropped))/binary, "}">>;
        false ->
            jiffy:encode(accepted_body(Msg, Dropped))
    end;
accepted_json(Msg, Dropped) ->
    jiffy:encode(accepted_body(Msg, Dropped)).

post_batch(Req) ->
    Items = case read_json(Req) of
                #{<<"messages">> := L} when is_list(L) -> L;
                _ -> fail(400, <<"invalid_field">>, <<"expected {\"messages\": [...]}">>,
                          #{<<"messages">> => <<"must be a list">>})
            end,
    refuse_if_overloaded(),
    Now = now_iso8601(),
    Valid = [check_batch_item(Index, Item, Now) || {Index, Item} <- enumerate(Items)],
    Checked = claim_batch(Valid),
    Fresh = [Msg || {new, Msg} <- Checked],
    Dropped = accept_many(Fresh),
    json(202, #{results => batch_results(Checked, Dropped)}, Req).

get_queue(UserId, Req) ->
    json(200, #{user_id => UserId, messages => message_queue_manager:peek(UserId),
                dropped => message_queue_manager:dropped(UserId)}, Req).

post_ack(UserId, Req) ->
    Ids = validated(message_validation:ack_ids(read_json(Req))),
    Removed = message_queue_manager:ack_messages(UserId, Ids),
    %% A message fetched over /queues counts as delivered once its
    %% recipient acknowledges it (WebSocket pushes are counted by messaging_ws).
    [stats_collector:count(delivered, Prio, 1) || #{priority := Prio} <- Removed],
    json(200, #{acknowledged => length(Removed)}, Req).

post_broadcast(Req) ->
    Fields = validated(message_validation:broadcast(read_json(Req))),
    refuse_if_overloaded(),
    B = Fields#{id => maps:get(id, Fields, message_ids:new_uuid()), created_at => now_iso8601()},
    Bid = maps:get(id, B),
    case message_ids:claim(<<"broadcast:", Bid/binary>>) of
        true ->
            make_durable([{bcast, B}], [<<"broadcast:", Bid/binary>>]),
            ok = message_broadcast:start(B);
        false ->
            ok
    end,
    json(202, #{broadcast_id => Bid, total => length(maps:get(user_ids, B))}, Req).

%%====================================================================
%% Intake
%%====================================================================

new_message(Fields, Now) ->
    Fields#{id => maps:get(id, Fields, message_ids:new_uuid()),
            created_at => Now, broadcast_id => null}.

accept_one(Msg) ->
    [Dropped] = accept_many([Msg]),
    Dropped.

%% Routed as soon as the WAL has written them (so WebSocket delivery does not
%% wait for the fsync): the WAL owner hands them to persistence and the router
%% itself, so the request makes one round trip. The 202 still waits for the
%% sync. Returns the receivers' dropped counts in order.
accept_many([]) ->
    [];
accept_many(Msgs) ->
    case message_wal:append_dispatch(Msgs) of
        {ok, Dropped} -> Dropped;
        {error, Reason} -> durable_failed(Reason, [Id || #{id := Id} <- Msgs])
    end.

make_durable(Terms, ClaimedIds) ->
    make_durable(Terms, ClaimedIds, fun() -> ok end).

%% On a WAL failure the claims are released so the client can retry.
make_durable([], _ClaimedIds, OnWritten) ->
    OnWritten();
make_durable(Terms, ClaimedIds, OnWritten) ->
    case message_wal:append(Terms, OnWritten) of
        {ok, Result} -> Result;
        {error, Reason} -> durable_failed(Reason, ClaimedIds)
    end.

durable_failed(Reason, ClaimedIds) ->
    [message_ids:release(Id) || Id <- ClaimedIds],
    logger:error("WAL append failed: ~p", [Reason]),
    fail(503, <<"unavailable">>, <<"could not make the message durable, retry">>).

check_batch_item(Index, Item, Now) ->
    case message_validation:message(Item) of
        {error, Fields} ->
            {invalid, Index, Fields};
        {ok, Fields} ->
            {valid, new_message(Fields, Now)}
    end.

%% Claim every valid id with one ETS call when none is known yet (the usual
%% case); otherwise claim one by one to find out which ones are.
claim_batch(Checked) ->
    Ids = [Id || {valid, #{id := Id}} <- Checked],
    AllClaimed = length(lists:usort(Ids)) =:= length(Ids) andalso message_ids:claim_all(Ids),
    [claim_item(C, AllClaimed) || C <- Checked].

claim_item({valid, Msg}, true) ->
    {new, Msg};
claim_item({valid, Msg = #{id := Id}}, false) ->
    case message_ids:claim(Id) of
        true -> {new, Msg};
        false -> {known, Msg}
    end;
claim_item(Invalid, _AllClaimed) ->
    Invalid.

%% Dropped holds one count per new message, in the order of Checked.
batch_results([{new, Msg} | Checked], [Dropped | Rest]) ->
    [accepted_body(Msg, Dropped) | batch_results(Checked, Rest)];
batch_results([Other | Checked], Dropped) ->
    [batch_result(Other) | batch_results(Checked, Dropped)];
batch_results([], []) ->
    [].

batch_result({known, Msg}) -> accepted_body(Msg, 0);
batch_result({invalid, Index, Fields}) ->
    #{index => Index, error => #{code => <<"invalid_field">>,
                                 message => <<"invalid message">>, fields => Fields}}.

accepted_body(#{id := Id, priority := Prio}, Dropped) ->
    #{id => Id, status => accepted, priority => Prio, dropped => Dropped}.

refuse_if_overloaded() ->
    Max = persistent_term:get({?MODULE, max_pending}),
    case message_persistence:pending_count() > Max orelse message_router:backlog() > Max of
        true -> fail(503, <<"overloaded">>, <<"service overloaded, retry later">>);
        false -> ok
    end.

%%====================================================================
%% Request helpers
%%====================================================================

require_token(Req) ->
    Given = mochiweb_request:get_header_value(?TOKEN_HEADER, Req),
    case messaging_auth:token_ok(Given, persistent_term:get({?MODULE, secret})) of
        true -> ok;
        false -> fail(401, <<"unauthorized">>, <<"missing or invalid X-Messaging-Token">>)
    end.

read_json(Req) ->
    Body = read_body(Req),
    try jiffy:decode(Body, [return_maps])
    catch _:_ -> fail(400, <<"invalid_json">>, <<"request body is not valid JSON">>)
    end.

read_body(Req) ->
    Max = persistent_term:get({?MODULE, max_body}),
    case declared_length(Req) of
        N when is_integer(N), N > Max -> too_large(Max);
        _ ->
            try mochiweb_request:recv_body(Max, Req) of
                undefined -> <<>>;
                Body -> Body
            catch exit:body_too_large -> too_large(Max);
                  exit:{body_too_large, _} -> too_large(Max)
            end
    end.

declared_length(Req) ->
    case mochiweb_request:get_header_value("content-length", Req) of
        undefined -> undefined;
        Value -> try list_to_integer(string:trim(Value)) catch _:_ -> undefined end
    end.

too_large(Max) ->
    fail(413, <<"payload_too_large">>,
         iolist_to_binary(["request body exceeds ", integer_to_list(Max), " bytes"])).

user_id(Segment) ->
    try list_to_integer(Segment) of
        N when N > 0 -> N;
        _ -> bad_user_id()
    catch error:badarg -> bad_user_id()
    end.

bad_user_id() ->
    fail(400, <<"invalid_field">>, <<"user id must be a positive integer">>,
         #{<<"user_id">> => <<"must be a positive integer">>}).

validated({ok, Fields}) -> Fields;
validated({error, Fields}) -> fail(400, <<"invalid_field">>, <<"invalid request fields">>, Fields).

method_not_allowed(Allowed, Req) ->
    Allow = lists:join(", ", [atom_to_list(M) || M <- Allowed]),
    Body = jiffy:encode(error_body(<<"method_not_allowed">>, <<"method not allowed">>, #{})),
    mochiweb_request:respond({405, [{"Allow", Allow} | ?JSON], Body}, Req),
    throw(responded).

%%====================================================================
%% Responses
%%====================================================================

fail(Code, ErrCode, Message) ->
    fail(Code, ErrCode, Message, #{}).

fail(Code, ErrCode, Message, Fields) ->
    throw({http_error, Code, ErrCode, Message, Fields}).

json(Code, Body, Req) ->
    mochiweb_request:respond({Code, ?JSON, jiffy:encode(Body)}, Req).

%% Every 503 is temporary: tell clients when to come back.
error_response(503, ErrCode, Message, _Fields, Req) ->
    Body = jiffy:encode(error_body(ErrCode, Message, #{})),
    mochiweb_request:respond({503, [{"Retry-After", "1"} | ?JSON], Body}, Req);
error_response(Code, ErrCode, Message, Fields, Req) ->
    json(Code, error_body(ErrCode, Message, Fields), Req).

error_body(ErrCode, Message, Fields) when map_size(Fields) =:= 0 ->
    #{error => #{code => ErrCode, message => Message}};
error_body(ErrCode, Message, Fields) ->
    #{error => #{code => ErrCode, message => Message, fields => Fields}}.

%% Same text as calendar:system_time_to_rfc3339(Ms, [{unit, millisecond},
%% {offset, "Z"}]), formatted by hand: the generic one costs several
%% microseconds on every accepted message.
now_iso8601() ->
    Ms = erlang:system_time(millisecond),
    {{Y, Mo, D}, {H, Mi, S}} = calendar:system_time_to_universal_time(Ms div 1000, second),
    <<(pad(Y, 4))/binary, $-, (pad(Mo, 2))/binary, $-, (pad(D, 2))/binary, $T,
      (pad(H, 2))/binary, $:, (pad(Mi, 2))/binary, $:, (pad(S, 2))/binary, $.,
      (pad(Ms rem 1000, 3))/binary, $Z>>.

pad(N, Width) ->
    Digits = integer_to_binary(N),
    case Width - byte_size(Digits) of
        Zeros when Zeros > 0 -> <<(binary:copy(<<"0">>, Zeros))/binary, Digits/binary>>;
        _ -> Digits
    end.

enumerate(List) ->
    lists:zip(lists:seq(0, length(List) - 1), List).
