%% WebSocket push to connected users.
%%
%% messaging_http hands `GET /ws?token=...` to handle_upgrade/1. After the token
%% is checked we answer the 101 ourselves and the mochiweb connection process
%% becomes the session: it joins the `messaging_pg` group {user, UserId} and
%% never goes back to mochiweb's keep-alive loop (it ends with exit(normal), as
%% mochiweb_websocket does). Since pg groups span the cluster, deliver/2 on any
%% node reaches the user's sessions on every node.
%%
%% Frames are parsed with cowlib's cow_ws. The session keeps a small raw buffer
%% and only parses a frame once all of it has arrived, so frames split across
%% TCP reads cost nothing special. Idle sessions hibernate to stay small.
%%
%% Protocol (all application frames are JSON text frames):
%%   server -> client  {"type": "message", "message": {...}}   a pushed message
%%                     {"type": "auth_ok", "expires_at": Unix}   renewal accepted
%%   client -> server  {"type": "ack", "ids": [Id, ...]}         delivered, drop from queue
%%                     {"type": "auth", "token": Token}          renew the session's token
%% Other client frames are ignored.
%%
%% Limits, each answered with a close frame and the end of the connection:
%%   - Token expiry. The session lives until the expiry of its token (the one
%%     of the upgrade, then of the last accepted renewal): at that second it is
%%     closed with 1008 "token expired". A renewal is a fresh token of the same
%%     user; the session's expiry becomes that token's expiry and the server
%%     answers auth_ok with it. A renewal with a token that is malformed, badly
%%     signed ("invalid token"), already expired ("token expired") or of
%%     another user ("token for another user") closes with 1008.
%%   - Sessions per user: at most ws_max_connections_per_user open sessions
%%     across the cluster. One more is accepted (101) and closed at once with
%%     1008 "too many connections".
%%   - Size: a frame, or a fragmented message reassembled, above
%%     ws_max_message_bytes closes with 1009.
%%   Protocol errors close with 1002 (1007 for a text frame that is not UTF-8).
-module(messaging_ws).

-export([handle_upgrade/1, deliver/2, sessions/1, ping_interval/0]).
%% Internal: re-entry point after hibernation.
-export([run/1]).

-include_lib("kernel/include/logger.hrl").

-define(PG_SCOPE, messaging_pg).
-define(DEFAULT_PING_MS, 25000).
%% Go to sleep (and compact the heap) after this long without any event.
-define(HIBERNATE_AFTER_MS, 1000).
%% How long a new session waits for another node to count its user's sessions.
-define(REMOTE_COUNT_TIMEOUT_MS, 1000).
-define(WS_GUID_HEADER, "sec-websocket-key").
-define(RECV_BUFFER, 1024).

-record(ws, {
    socket,
    user_id :: pos_integer(),
    %% The one timer that closes the session when its token expires;
    %% replaced (the old one cancelled) on every accepted renewal.
    expiry_timer :: reference(),
    %% Largest frame / reassembled message accepted; bigger gets close 1009.
    max_message_bytes :: pos_integer(),
    buffer = <<>> :: binary(),
    %% cow_ws fragment state and the fragments received so far (reversed).
    frag_state = undefined,
    frag_acc = [] :: [binary()],
    frag_size = 0 :: non_neg_integer(),
    utf8 = 0 :: non_neg_integer(),
    ping_ms :: pos_integer(),
    %% monotonic ms of the last byte received from the client.
    last_seen :: integer()
}).

%%====================================================================
%% API
%%====================================================================

%% @doc Route a message to every session of UserId, on every node.
%% Only sends Erlang messages, so it never blocks the router. A message that
%% reached at least one session counts once as delivered.
-spec deliver(integer(), map()) -> ok.
deliver(UserId, Msg) ->
    case sessions(UserId) of
        [] ->
            ok;
        Pids ->
            _ = [Pid ! {deliver, Msg} || Pid <- Pids],
            count_delivered(maps:get(priority, Msg, <<"normal">>))
    end.

count_delivered(Priority) ->
    try stats_collector:count(delivered, Priority, 1) catch _:_ -> ok end,
    ok.

%% @doc Session processes of UserId across the cluster.
-spec sessions(integer()) -> [pid()].
sessions(UserId) ->
    Group = {user, UserId},
    %% Most users have no session. pg's scope table is keyed by group, so a
    %% plain lookup answers that case; pg:get_members/2 would raise and catch
    %% badarg inside for every such user (costly on the routing hot path).
    try ets:member(?PG_SCOPE, Group) andalso pg:get_members(?PG_SCOPE, Group) of
        false -> [];
        Pids -> Pids
    catch error:badarg -> []  % scope not started (app stopping)
    end.

-spec ping_interval() -> pos_integer().
ping_interval() ->
    case string:to_integer(os:getenv("MESSAGING_WS_PING_MS", "")) of
        {N, []} when N > 0 -> N;
        _ -> ?DEFAULT_PING_MS
    end.

%% @doc Called by messaging_http with the mochiweb request for GET /ws.
%% Answers 401/400 and returns when the request cannot be upgraded; otherwise
%% never returns.
handle_upgrade(Req) ->
    Token = proplists:get_value("token", mochiweb_request:parse_qs(Req)),
    case ws_token:claims(Token) of
        {ok, UserId, ExpiresUnix} -> upgrade(UserId, ExpiresUnix, Req);
        {error, Reason} -> reject(401, <<"unauthorized">>, token_message(Reason), Req)
    end.

%%====================================================================
%% Handshake
%%====================================================================

upgrade(UserId, ExpiresUnix, Req) ->
    Key = mochiweb_request:get_header_value(?WS_GUID_HEADER, Req),
    case is_websocket_request(Key, Req) of
        true -> accept(UserId, ExpiresUnix, Key, mochiweb_request:get(socket, Req));
        false -> reject(400, <<"bad_request">>, <<"expected a WebSocket upgrade">>, Req)
    end.

is_websocket_request(undefined, _Req) ->
    false;
is_websocket_request(_Key, Req) ->
    Upgrade = mochiweb_request:get_header_value("upgrade", Req),
    Version = mochiweb_request:get_header_value("sec-websocket-version", Req),
    is_list(Upgrade) andalso string:lowercase(Upgrade) =:= "websocket"
        andalso (Version =:= undefined orelse Version =:= "13").

reject(Code, ErrCode, Message, Req) ->
    Body = jiffy:encode(#{error => #{code => ErrCode, message => Message}}),
    mochiweb_request:respond({Code, [{"Content-Type", "application/json"}], Body}, Req).

token_message(missing) -> <<"missing token">>;
token_message(expired) -> <<"token expired">>;
token_message(_) -> <<"invalid token">>.

accept(UserId, ExpiresUnix, Key, Socket) ->
    Accept = cow_ws:encode_key(list_to_binary(Key)),
    Response = [<<"HTTP/1.1 101 Switching Protocols\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: ">>, Accept, <<"\r\n\r\n">>],
    %% Join before answering: once the client has its 101, messages sent to
    %% it must already find this session (they wait in its mailbox meanwhile).
    ok = pg:join(?PG_SCOPE, {user, UserId}, self()),
    case within_session_cap(UserId) of
        true ->
            case mochiweb_socket:send(Socket, Response) of
                ok ->
                    start_session(UserId, ExpiresUnix, Socket);
                {error, _} ->
                    catch pg:leave(?PG_SCOPE, {user, UserId}, self()),
                    close_and_exit(Socket)
            end;
        false ->
            catch pg:leave(?PG_SCOPE, {user, UserId}, self()),
            %% Browsers only show a close code to a socket that opened, so the
            %% refusal is a WebSocket close rather than an HTTP error.
            Close = cow_ws:frame({close, 1008, <<"too many connections">>}, #{}),
            _ = mochiweb_socket:send(Socket, [Response, Close]),
            close_and_exit(Socket)
    end.

%% Counted after joining, never before: of two connections racing for the
%% last place, the one that counts second sees the other, so at most the cap
%% stay open (both may be refused, which a client's retry resolves).
within_session_cap(UserId) ->
    cluster_session_count({user, UserId}) =< messaging_config:get(ws_max_connections_per_user).

%% Each node counts its own members: pg's view of other nodes' members is
%% updated asynchronously and may not show a session that just joined there.
%% A node that does not answer in time is counted from that view instead.
cluster_session_count(Group) ->
    Local = length(pg:get_local_members(?PG_SCOPE, Group)),
    case nodes() of
        [] ->
            Local;
        Nodes ->
            Answers = erpc:multicall(Nodes, pg, get_local_members, [?PG_SCOPE, Group],
                                     ?REMOTE_COUNT_TIMEOUT_MS),
            Remote = lists:zipwith(fun(Node, Answer) -> remote_count(Node, Answer, Group) end,
                                   Nodes, Answers),
            Local + lists:sum(Remote)
    end.

remote_count(_Node, {ok, Pids}, _Group) when is_list(Pids) ->
    length(Pids);
remote_count(Node, _Error, Group) ->
    length([Pid || Pid <- pg:get_members(?PG_SCOPE, Group), node(Pid) =:= Node]).

start_session(UserId, ExpiresUnix, Socket) ->
    %% A slow reader must not hold this process forever in send/2. The inet
    %% driver keeps a receive buffer of `buffer' bytes per socket even when
    %% idle; clients send little (acks, pongs), so 1 KB instead of mochiweb's
    %% 8 KB saves most of an idle connection's memory. Bigger frames simply
    %% arrive in several reads.
    ok = mochiweb_socket:setopts(Socket, [{packet, raw}, {active, once}, {buffer, ?RECV_BUFFER},
                                          {send_timeout, 15000}, {send_timeout_close, true}]),
    forget_request(),
    process_flag(trap_exit, false),
    stats(ws_connected),
    PingMs = ping_interval(),
    schedule_ping(PingMs),
    State = #ws{socket = Socket, user_id = UserId, ping_ms = PingMs, last_seen = now_ms(),
                expiry_timer = start_expiry_timer(ExpiresUnix),
                max_message_bytes = messaging_config:get(ws_max_message_bytes)},
    run(State).

%% mochiweb caches the parsed request in the process dictionary; the session
%% never needs it again, so drop it to keep idle sessions small.
forget_request() ->
    [erase(K) || {K, _} <- get(), is_atom(K), is_request_key(atom_to_list(K))],
    ok.

is_request_key("mochiweb_request" ++ _) -> true;
is_request_key(_) -> false.

%%====================================================================
%% Session loop
%%====================================================================

%% @private Each step runs inside try so a crash still decrements the
%% connection count; run/1 itself stays tail recursive.
run(State) ->
    case safe_step(State) of
        {ok, State2} -> run(State2);
        {hibernate, State2} -> erlang:hibernate(?MODULE, run, [State2]);
        {stop, State2} -> finish(State2)
    end.

safe_step(State) ->
    try step(State)
    catch Class:Reason:Stack ->
        finish_quietly(State),
        erlang:raise(Class, Reason, Stack)
    end.

step(State = #ws{socket = Socket, expiry_timer = ExpiryTimer}) ->
    receive
        {deliver, Msg} -> push_message(Msg, State);
        {timeout, ExpiryTimer, token_expired} -> policy_close(<<"token expired">>, State);
        {tcp, Socket, Data} -> received(Data, State);
        {ssl, Socket, Data} -> received(Data, State);
        {tcp_closed, Socket} -> {stop, State};
        {ssl_closed, Socket} -> {stop, State};
        {tcp_error, Socket, _} -> {stop, State};
        {ssl_error, Socket, _} -> {stop, State};
        ping_tick -> ping_tick(State);
        {send_text, Bin} -> send_frame({text, Bin}, State);
        _Other -> {ok, State}
    after ?HIBERNATE_AFTER_MS ->
        {hibernate, State}
    end.

%% The request id is for tracing between Django and this service; the
%% browser gets the message without it.
push_message(Msg, State) ->
    Json = jiffy:encode(#{type => message, message => maps:remove(request_id, Msg)}),
    send_frame({text, Json}, State).

send_frame(Frame, State = #ws{socket = Socket}) ->
    case mochiweb_socket:send(Socket, cow_ws:frame(Frame, #{})) of
        ok -> {ok, State};
        {error, _} -> {stop, State}
    end.

%% Ping the client every interval; drop it when nothing (pong or data) came
%% back for two intervals, which means the peer or a proxy went away.
ping_tick(State = #ws{ping_ms = PingMs, last_seen = LastSeen}) ->
    case now_ms() - LastSeen > 2 * PingMs of
        true ->
            {stop, State};
        false ->
            schedule_ping(PingMs),
            send_frame(ping, State)
    end.

schedule_ping(PingMs) ->
    erlang:send_after(PingMs, self(), ping_tick).

%% Fires at the token's expiry, read on this node's clock as Django's is read
%% when it signs. step/1 only acts on the current timer's message, so a stale
%% one (cancelled too late) is ignored.
start_expiry_timer(ExpiresUnix) ->
    Delay = max(0, ExpiresUnix * 1000 - erlang:system_time(millisecond)),
    erlang:start_timer(Delay, self(), token_expired).

%%====================================================================
%% Incoming frames
%%====================================================================

received(Data, State = #ws{buffer = Buffer, socket = Socket}) ->
    State2 = State#ws{buffer = <<Buffer/binary, Data/binary>>, last_seen = now_ms()},
    case parse_frames(State2) of
        {ok, State3} ->
            ok = active_once(Socket),
            {ok, State3};
        Stop ->
            Stop
    end.

active_once(Socket) ->
    case mochiweb_socket:setopts(Socket, [{active, once}]) of
        ok -> ok;
        {error, _} -> ok  % the closed message follows
    end.

%% Parse every complete frame in the buffer; keep the incomplete tail.
parse_frames(State = #ws{buffer = Buffer, frag_state = FragState}) ->
    case cow_ws:parse_header(Buffer, #{}, FragState) of
        more ->
            check_buffer_size(State);
        error ->
            protocol_close(1002, State);
        {_Type, _Frag, _Rsv, _Len, undefined, _Rest} ->
            %% RFC 6455 5.1: a server must close on an unmasked client frame.
            protocol_close(1002, State);
        {_Type, _Frag, _Rsv, Len, _Mask, _Rest} when Len > State#ws.max_message_bytes ->
            protocol_close(1009, State);
        {_Type, _Frag, _Rsv, Len, _Mask, Rest} when byte_size(Rest) < Len ->
            {ok, State};  % wait for the rest of this frame
        {Type, Frag, Rsv, Len, Mask, Rest} ->
            parse_payload(Type, Frag, Rsv, Len, Mask, Rest, State)
    end.

%% Guards against a header-less trickle growing the buffer without bound.
check_buffer_size(State = #ws{buffer = Buffer}) when byte_size(Buffer) > 14 ->
    protocol_close(1002, State);
check_buffer_size(State) ->
    {ok, State}.

parse_payload(Type, Frag, Rsv, Len, Mask, Rest, State = #ws{utf8 = Utf8}) ->
    %% UTF-8 validation state only carries across fragments of a text message.
    Utf8In = case Type of fragment -> Utf8; _ -> 0 end,
    case cow_ws:parse_payload(Rest, Mask, Utf8In, 0, Type, Len, Frag, #{}, Rsv) of
        {ok, Payload, Utf8Out, Tail} ->
            frame(Type, Frag, Payload, Utf8Out, State#ws{buffer = Tail});
        {ok, CloseCode, Payload, _Utf8Out, Tail} ->
            client_close(CloseCode, Payload, State#ws{buffer = Tail});
        {error, badencoding} ->
            protocol_close(1007, State);
        _Error ->
            protocol_close(1002, State)
    end.

frame(text, _Frag, Payload, _Utf8, State) ->
    continue(client_text(Payload, State));
frame(binary, _Frag, _Payload, _Utf8, State) ->
    parse_frames(State);
frame(ping, _Frag, Payload, _Utf8, State) ->
    case send_frame({pong, Payload}, State) of
        {ok, State2} -> parse_frames(State2);
        Stop -> Stop
    end;
frame(pong, _Frag, _Payload, _Utf8, State) ->
    parse_frames(State);
frame(close, _Frag, Payload, _Utf8, State) ->
    client_close(undefined, Payload, State);
frame(fragment, Frag, Payload, Utf8, State) ->
    fragment(Frag, Payload, State#ws{utf8 = Utf8}).

%% Go on parsing after a frame was handled, unless handling it ended the session.
continue({ok, State}) -> parse_frames(State);
continue(Stop) -> Stop.

%% Collect fragments until the fin one, then handle the whole message. The
%% size limit applies to the message: every fragment, the last one included,
%% counts towards it.
fragment(_Frag, Payload, State = #ws{frag_size = Size, max_message_bytes = Max})
  when Size + byte_size(Payload) > Max ->
    protocol_close(1009, State);
fragment({nofin, _Kind, _Rsv} = Frag, Payload, State = #ws{frag_acc = Acc, frag_size = Size}) ->
    parse_frames(State#ws{frag_state = Frag, frag_acc = [Payload | Acc],
                          frag_size = Size + byte_size(Payload)});
fragment({fin, Kind, _Rsv}, Payload, State = #ws{frag_acc = Acc}) ->
    Message = iolist_to_binary(lists:reverse([Payload | Acc])),
    Reset = State#ws{frag_state = undefined, frag_acc = [], frag_size = 0, utf8 = 0},
    case Kind of
        text -> continue(client_text(Message, Reset));
        binary -> parse_frames(Reset)
    end.

%% Clients send acks and token renewals; anything else is ignored.
client_text(Payload, State = #ws{user_id = UserId}) ->
    case decode(Payload) of
        #{<<"type">> := <<"ack">>, <<"ids">> := Ids} when is_list(Ids) ->
            ack(UserId, Ids),
            {ok, State};
        #{<<"type">> := <<"auth">>} = Auth ->
            renew(token_of(Auth), State);
        _ ->
            {ok, State}
    end.

%% Only a JSON string can be a token.
token_of(#{<<"token">> := Token}) when is_binary(Token) -> Token;
token_of(_Auth) -> undefined.

%% A fresh token of the session's user replaces the expiry timer; any other
%% token ends the session, as an expired one would.
renew(Token, State = #ws{user_id = UserId}) ->
    case ws_token:claims(Token) of
        {ok, UserId, ExpiresUnix} -> extend(ExpiresUnix, State);
        {ok, _OtherUser, _ExpiresUnix} -> policy_close(<<"token for another user">>, State);
        {error, expired} -> policy_close(<<"token expired">>, State);
        {error, _} -> policy_close(<<"invalid token">>, State)
    end.

extend(ExpiresUnix, State = #ws{expiry_timer = OldTimer}) ->
    _ = erlang:cancel_timer(OldTimer, [{async, true}, {info, false}]),
    Renewed = State#ws{expiry_timer = start_expiry_timer(ExpiresUnix)},
    send_frame({text, jiffy:encode(#{type => auth_ok, expires_at => ExpiresUnix})}, Renewed).

decode(Payload) ->
    try jiffy:decode(Payload, [return_maps])
    catch _:_ -> undefined
    end.

%% Acks are best effort: a failing queue manager must not drop the socket.
ack(UserId, Ids) ->
    try message_queue_manager:ack(UserId, Ids)
    catch Class:Reason ->
        ?LOG_DEBUG("ws ack for ~p failed: ~p:~p", [UserId, Class, Reason])
    end.

%%====================================================================
%% Closing
%%====================================================================

%% Close handshake started by the client: echo its code, then close.
client_close(Code, _Payload, State) ->
    Reply = case Code of
                undefined -> close;
                _ -> {close, Code, <<>>}
            end,
    _ = send_frame(Reply, State),
    {stop, State}.

protocol_close(Code, State) ->
    _ = send_frame({close, Code, <<>>}, State),
    {stop, State}.

%% 1008 (policy violation) with a short reason a client can log.
policy_close(Reason, State) ->
    _ = send_frame({close, 1008, Reason}, State),
    {stop, State}.

finish(State) ->
    finish_quietly(State),
    exit(normal).

finish_quietly(#ws{socket = Socket, user_id = UserId}) ->
    catch pg:leave(?PG_SCOPE, {user, UserId}, self()),
    stats(ws_disconnected),
    catch mochiweb_socket:close(Socket),
    ok.

close_and_exit(Socket) ->
    catch mochiweb_socket:close(Socket),
    exit(normal).

%% Counting is best effort too; the session works without stats_collector.
stats(Event) ->
    try stats_collector:Event() catch _:_ -> ok end,
    ok.

now_ms() ->
    erlang:monotonic_time(millisecond).
