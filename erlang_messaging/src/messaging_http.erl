%% The HTTP API (mochiweb). Every request runs in its connection's process
%% (messaging_http_conn reads and checks the request head); handlers are
%% wrapped so bad input never takes the listener down and unexpected crashes
%% become a 500 JSON error. HEAD is answered wherever GET is: mochiweb sends
%% the same status and headers without the body.
%%
%% POST /messages answers 202 only after the message is synced to the WAL.
%% Note: mochiweb 3.x on OTP 25 needs mochiweb_request:F(..., Req) calls;
%% the old Req:F(...) tuple-module style does not work.
%%
%% Every request has an id (the client's X-Request-Id when usable, else a
%% fresh one): echoed in the X-Request-Id response header, kept in each
%% message it brings (request_id), set as logger metadata for whatever the
%% request logs, and named in the one log line written per answer.
-module(messaging_http).

-export([start_link/0, loop/1, error_body/3]).

-include_lib("kernel/include/logger.hrl").

-define(JSON, [{"Content-Type", "application/json"}]).
%% Per-request context in the connection process's dictionary; set anew at
%% the start of each request of a kept-alive connection.
-define(REQUEST_ID, {?MODULE, request_id}).
-define(STARTED_AT, {?MODULE, started_at}).
-define(LOG_DETAIL, {?MODULE, log_detail}).

start_link() ->
    persistent_term:put({?MODULE, max_pending}, messaging_config:get(max_pending)),
    persistent_term:put({?MODULE, max_body}, messaging_config:get(max_body_bytes)),
    %% Read on every request; the config lookup goes through the OS env.
    persistent_term:put({?MODULE, secrets}, messaging_auth:configured_secrets()),
    persistent_term:put({?MODULE, body_timeout}, messaging_config:get(http_body_timeout_ms)),
    persistent_term:put({?MODULE, max_text_chars}, messaging_config:get(message_max_text_chars)),
    %% mochiweb_request's Date header needs mochiweb's clock (mochiweb_http
    %% starts it; this listener does not go through mochiweb_http).
    ok = ensure_started(mochiweb_clock:start()),
    Connection = #{handler => fun ?MODULE:loop/1,
                   header_timeout_ms => messaging_config:get(http_header_timeout_ms),
                   idle_timeout_ms => messaging_config:get(http_idle_timeout_ms)},
    mochiweb_socket_server:start_link([{name, ?MODULE},
                                       {port, messaging_config:get(http_port)},
                                       {ip, messaging_config:get(bind_ip)},
                                       {loop, {messaging_http_conn, start, [Connection]}},
                                       {max, messaging_config:get(max_connections)},
                                       {backlog, 1024},
                                       {acceptor_pool_size, 100},
                                       {nodelay, true},
                                       %% The kernel sizes the receive window itself; the
                                       %% driver's user-space buffer stays small, since
                                       %% every idle WebSocket keeps one (mochiweb's
                                       %% default is 8 KB). Longer request and header
                                       %% lines still arrive whole (messaging_http_conn
                                       %% sets packet_size), and so do bodies:
                                       %% recv(Length) sizes its own buffer.
                                       {recbuf, undefined},
                                       {buffer, 1024}]).

ensure_started({ok, _Pid}) -> ok;
ensure_started({error, {already_started, _Pid}}) -> ok.

%% @doc mochiweb loop: one call per request on a (keep-alive) connection.
loop(Req) ->
    Method = mochiweb_request:get(method, Req),
    Path = string:lexemes(mochiweb_request:get(path, Req), "/"),
    begin_request(Req),
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
        throw:{http_error_close, Code, ErrCode, Message} ->
            error_response_and_close(Code, ErrCode, Message, Req);
        throw:responded ->
            ok;
        Class:Reason:Stack ->
            ?LOG_ERROR("request ~p ~p crashed: ~p:~p ~p", [Method, Path, Class, Reason, Stack]),
            error_response(500, <<"internal_error">>, <<"internal server error">>, #{}, Req)
    end.

begin_request(Req) ->
    RequestId = messaging_request_id:from_header(
                  mochiweb_request:get_header_value("x-request-id", Req)),
    put(?REQUEST_ID, RequestId),
    put(?STARTED_AT, erlang:monotonic_time(microsecond)),
    erase(?LOG_DETAIL),
    logger:set_process_metadata(#{request_id => RequestId}).

request_id() ->
    get(?REQUEST_ID).

%% What the request's log line adds about the messages it brought.
log_detail(Detail) ->
    put(?LOG_DETAIL, Detail).

%%====================================================================
%% Routing
%%====================================================================

handle(Method, ["health"], Req) when Method =:= 'GET'; Method =:= 'HEAD' ->
    health(Req);
handle(Method, Path, Req) ->
    case allowed_methods(Path) of
        [] -> fail(404, <<"not_found">>, <<"no such endpoint">>);
        Allowed ->
            lists:member(Method, Allowed) orelse method_not_allowed(Allowed, Req),
            require_token(Req),
            endpoint(Method, Path, Req)
    end.

allowed_methods(["health"]) -> ['GET', 'HEAD'];
%% A WebSocket handshake is a GET (RFC 6455 4.1): HEAD cannot open one.
allowed_methods(["ws"]) -> ['GET'];
allowed_methods(["messages"]) -> ['POST'];
allowed_methods(["messages", "batch"]) -> ['POST'];
allowed_methods(["queues", _User]) -> ['GET', 'HEAD'];
allowed_methods(["queues", _User, "ack"]) -> ['POST'];
allowed_methods(["broadcast"]) -> ['POST'];
allowed_methods(["stats"]) -> ['GET', 'HEAD'];
allowed_methods(["metrics"]) -> ['GET', 'HEAD'];
allowed_methods(_) -> [].

%% mochiweb_request:respond/2 leaves the body out of a HEAD answer.
endpoint('HEAD', Path, Req) -> endpoint('GET', Path, Req);
endpoint('POST', ["messages"], Req) -> post_message(Req);
endpoint('POST', ["messages", "batch"], Req) -> post_batch(Req);
endpoint('GET', ["queues", User], Req) -> get_queue(user_id(User), Req);
endpoint('POST', ["queues", User, "ack"], Req) -> post_ack(user_id(User), Req);
endpoint('POST', ["broadcast"], Req) -> post_broadcast(Req);
endpoint('GET', ["stats"], Req) -> json(200, stats_collector:snapshot(), Req);
endpoint('GET', ["metrics"], Req) -> metrics(Req).

%%====================================================================
%% Endpoints
%%====================================================================

%% No token needed; a wrong or missing one just gets the status alone.
health(Req) ->
    {Code, Body} = messaging_health:check(authorized(Req)),
    json(Code, Body, Req).

metrics(Req) ->
    reply(200, [{"Content-Type", messaging_metrics:content_type()}], messaging_metrics:render(), Req).

post_message(Req) ->
    Fields = validated(message_validation:message(read_json(Req), max_text_chars())),
    refuse_if_overloaded(),
    Msg = new_message(Fields, now_iso8601()),
    Dropped = case message_ids:claim(maps:get(id, Msg)) of
                  false -> 0;
                  true -> accept_one(Msg)
              end,
    log_detail(#{message_ids => [maps:get(id, Msg)]}),
    reply(202, ?JSON, accepted_json(Msg, Dropped), Req).

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
    MaxTextChars = max_text_chars(),
    Valid = [check_batch_item(Index, Item, Now, MaxTextChars) || {Index, Item} <- enumerate(Items)],
    Checked = claim_batch(Valid),
    Fresh = [Msg || {new, Msg} <- Checked],
    Dropped = accept_many(Fresh),
    log_detail(#{message_count => length(Checked) - length([I || I = {invalid, _, _} <- Checked])}),
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
    Fields = validated(message_validation:broadcast(read_json(Req), max_text_chars())),
    refuse_if_overloaded(),
    B = Fields#{id => maps:get(id, Fields, message_ids:new_uuid()), created_at => now_iso8601(),
                request_id => request_id()},
    Bid = maps:get(id, B),
    log_detail(#{broadcast_id => Bid, message_count => length(maps:get(user_ids, B))}),
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
            created_at => Now, broadcast_id => null, request_id => request_id()}.

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
    ?LOG_ERROR("WAL append failed: ~p", [Reason]),
    fail(503, <<"unavailable">>, <<"could not make the message durable, retry">>).

check_batch_item(Index, Item, Now, MaxTextChars) ->
    case message_validation:message(Item, MaxTextChars) of
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
    case authorized(Req) of
        true -> ok;
        false -> fail(401, <<"unauthorized">>, <<"missing or invalid X-Messaging-Token">>)
    end.

%% X-Messaging-Token or Authorization: Bearer, with the current or (during a
%% rotation) the previous secret.
authorized(Req) ->
    messaging_auth:token_ok(messaging_auth:request_token(Req),
                            persistent_term:get({?MODULE, secrets})).

read_json(Req) ->
    Body = read_body(Req),
    try jiffy:decode(Body, [return_maps])
    catch _:_ -> fail(400, <<"invalid_json">>, <<"request body is not valid JSON">>)
    end.

%% The head was checked by messaging_http_conn: the body is delimited by a
%% decimal Content-Length, by chunked Transfer-Encoding, or absent.
read_body(Req) ->
    Max = persistent_term:get({?MODULE, max_body}),
    case mochiweb_request:get(body_length, Req) of
        undefined -> <<>>;
        0 -> <<>>;
        chunked -> read_chunked(Max, Req);
        Length when Length > Max -> too_large(Max);
        Length -> read_exactly(Length, Req)
    end.

%% One recv, so HTTP_BODY_TIMEOUT_MS bounds the whole body (mochiweb's own
%% recv_body would wait 300 s). It answers "Expect: 100-continue" as
%% mochiweb_request:recv_body/2 does.
read_exactly(Length, Req) ->
    continue_if_expected(Req),
    try mochiweb_request:recv(Length, body_timeout(), Req)
    catch exit:{shutdown, recv_error} ->
        fail_and_close(408, <<"request_timeout">>, <<"request body not received in time">>)
    end.

continue_if_expected(Req) ->
    Expect = mochiweb_request:get_header_value("expect", Req),
    case is_list(Expect) andalso string:lowercase(Expect) =:= "100-continue" of
        true -> mochiweb_request:send(<<"HTTP/1.1 100 Continue\r\n\r\n">>, Req);
        false -> ok
    end.

%% mochiweb waits up to 300 s for each chunk; a timer bounds the whole body
%% instead and ends the connection when it fires. A chunk size that is not
%% hexadecimal raises inside mochiweb; after any chunk error the rest of the
%% stream cannot be trusted, hence the close.
read_chunked(Max, Req) ->
    {ok, Watchdog} = timer:exit_after(body_timeout(), {shutdown, body_timeout}),
    try mochiweb_request:recv_body(Max, Req)
    catch
        exit:{body_too_large, _} ->
            fail_and_close(413, <<"payload_too_large">>, too_large_message(Max));
        _:_ ->
            fail_and_close(400, <<"bad_request">>, <<"malformed chunked body">>)
    after
        timer:cancel(Watchdog)
    end.

body_timeout() ->
    persistent_term:get({?MODULE, body_timeout}).

max_text_chars() ->
    persistent_term:get({?MODULE, max_text_chars}).

too_large(Max) ->
    fail(413, <<"payload_too_large">>, too_large_message(Max)).

too_large_message(Max) ->
    iolist_to_binary(["request body exceeds ", integer_to_list(Max), " bytes"]).

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
    reply(405, [{"Allow", Allow} | ?JSON], Body, Req),
    throw(responded).

%%====================================================================
%% Responses
%%====================================================================

fail(Code, ErrCode, Message) ->
    fail(Code, ErrCode, Message, #{}).

fail(Code, ErrCode, Message, Fields) ->
    throw({http_error, Code, ErrCode, Message, Fields}).

%% For a body that could not be read to its end: the connection is closed
%% after the answer, since the next request's start is unknown.
fail_and_close(Code, ErrCode, Message) ->
    throw({http_error_close, Code, ErrCode, Message}).

json(Code, Body, Req) ->
    reply(Code, ?JSON, jiffy:encode(Body), Req).

%% Every answer goes out here: with the request's id, then its log line.
reply(Code, Headers, Body, Req) ->
    Response = mochiweb_request:respond({Code, [{"X-Request-Id", request_id()} | Headers], Body},
                                        Req),
    log_request(Code, Req),
    Response.

%% One line per answer, at info; probes (/health, /metrics: every few
%% seconds from load balancers and Prometheus) at debug, so they do not
%% drown the rest.
log_request(Code, Req) ->
    Path = mochiweb_request:get(path, Req),
    Level = case Path of
                "/health" -> debug;
                "/metrics" -> debug;
                _ -> info
            end,
    case logger:allow(Level, ?MODULE) of
        true -> log_request(Level, Code, Path, Req);
        false -> ok
    end.

log_request(Level, Code, Path, Req) ->
    Method = mochiweb_request:get(method, Req),
    Detail = case get(?LOG_DETAIL) of
                 undefined -> #{};
                 D -> D
             end,
    DurationMs = (erlang:monotonic_time(microsecond) - get(?STARTED_AT)) / 1000,
    Meta = Detail#{method => method_text(Method), path => list_to_binary(Path), status => Code,
                   duration_ms => round(DurationMs * 10) / 10},
    %% A ready string, not a format: io_lib:format would cost more than the
    %% rest of the line's work.
    %% The request id is in the text too, for LOG_FORMAT=plain.
    Text = iolist_to_binary([method_text(Method), $\s, Path, $\s, integer_to_binary(Code),
                             <<" request ">>, request_id(), detail_text(Detail)]),
    ?LOG(Level, Text, Meta).

%% Methods the inet driver knows are atoms; any other is the request's string.
method_text(Method) when is_atom(Method) -> atom_to_binary(Method);
method_text(Method) -> Method.

detail_text(#{message_ids := Ids}) -> [<<" message ">>, lists:join(<<", ">>, Ids)];
detail_text(#{broadcast_id := Bid, message_count := N}) ->
    [<<" broadcast ">>, Bid, <<" to ">>, integer_to_binary(N), <<" users">>];
detail_text(#{message_count := N}) -> [$\s, integer_to_binary(N), <<" messages">>];
detail_text(_None) -> <<>>.

%% Every 503 is temporary: tell clients when to come back.
error_response(503, ErrCode, Message, _Fields, Req) ->
    Body = jiffy:encode(error_body(ErrCode, Message, #{})),
    reply(503, [{"Retry-After", "1"} | ?JSON], Body, Req);
error_response(Code, ErrCode, Message, Fields, Req) ->
    json(Code, error_body(ErrCode, Message, Fields), Req).

error_response_and_close(Code, ErrCode, Message, Req) ->
    Body = jiffy:encode(error_body(ErrCode, Message, #{})),
    reply(Code, [{"Connection", "close"} | ?JSON], Body, Req),
    mochiweb_socket:close(mochiweb_request:get(socket, Req)),
    exit({shutdown, unreadable_body}).

%% @doc The service's error document (messaging_http_conn uses it too).
-spec error_body(binary(), binary(), map()) -> map().
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
