%% WebSocket push over loopback with a raw gen_tcp client written here, so the
%% tests see exactly the bytes on the wire (fragments, split frames, masking).
-module(ws_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([missing_token_is_401/1, bad_token_is_401/1, expired_token_is_401/1,
         handshake/1, posted_message_reaches_user/1, fragmented_message_reassembled/1,
         frame_split_byte_by_byte/1, server_ping_and_pong_keep_alive/1,
         silent_client_is_dropped/1, close_handshake/1, unmasked_frame_is_rejected/1,
         connection_count_and_pg_membership/1,
         renewed_session_outlives_two_token_lifetimes/1, session_without_renewal_closes_at_expiry/1,
         renewal_with_another_users_token_closes/1, renewal_with_a_bad_token_closes/1,
         eleventh_session_of_a_user_is_refused/1, racing_sessions_never_exceed_the_cap/1,
         message_of_the_size_limit_is_accepted/1, message_over_the_size_limit_is_1009/1,
         fragmented_message_over_the_size_limit_is_1009/1,
         broadcast_counts_recipients_online_and_offline/1,
         broadcast_messages_count_in_the_message_rate/1]).

%% Client helpers, also used by cluster_SUITE.
-export([free_port/0, start_app/2, ws_connect/2, ws_connect/3, ws_send/2, ws_send/3,
         ws_expect/2, ws_expect/3, token/1, http/5, post_message/4, service_headers/0,
         masked_frame/3, wait_until/2]).

-define(SECRET, "ws-suite-secret").
-define(WAIT_MS, 5000).
%% Short token lifetimes for the expiry cases, in seconds. Tokens carry whole
%% seconds, so one signed "now + 2" has between 1 and 2 seconds left.
-define(SHORT_TTL, 2).
%% The defaults of ws_max_connections_per_user and ws_max_message_bytes.
-define(SESSION_CAP, 10).
-define(MAX_MESSAGE_BYTES, 65536).

all() ->
    [missing_token_is_401, bad_token_is_401, expired_token_is_401, handshake,
     posted_message_reaches_user, fragmented_message_reassembled,
     frame_split_byte_by_byte, server_ping_and_pong_keep_alive, silent_client_is_dropped,
     close_handshake, unmasked_frame_is_rejected, connection_count_and_pg_membership,
     renewed_session_outlives_two_token_lifetimes, session_without_renewal_closes_at_expiry,
     renewal_with_another_users_token_closes, renewal_with_a_bad_token_closes,
     eleventh_session_of_a_user_is_refused, racing_sessions_never_exceed_the_cap,
     message_of_the_size_limit_is_accepted, message_over_the_size_limit_is_1009,
     fragmented_message_over_the_size_limit_is_1009,
     broadcast_counts_recipients_online_and_offline,
     broadcast_messages_count_in_the_message_rate].

%%--------------------------------------------------------------------
%% Setup
%%--------------------------------------------------------------------

init_per_suite(Config) ->
    Port = free_port(),
    ok = start_app(Port, ?config(priv_dir, Config)),
    [{port, Port} | Config].

end_per_suite(_Config) ->
    _ = application:stop(messaging_service),
    ok.

init_per_testcase(_Case, Config) ->
    os:unsetenv("MESSAGING_WS_PING_MS"),
    Config.

end_per_testcase(_Case, _Config) ->
    os:unsetenv("MESSAGING_WS_PING_MS"),
    ok.

%% The service reads its settings from the environment, as bin/messaging-start
%% gives them. Django is pointed at a loopback port nobody listens on:
%% persistence just retries, which these tests do not depend on.
start_app(Port, DataDir) ->
    os:putenv("HTTP_PORT", integer_to_list(Port)),
    os:putenv("MESSAGING_DATA_DIR", DataDir),
    os:putenv("MESSAGING_SHARED_SECRET", ?SECRET),
    os:putenv("DJANGO_API_URL", "http://127.0.0.1:" ++ integer_to_list(free_port())),
    {ok, _} = application:ensure_all_started(messaging_service),
    wait_until(fun() -> listening(Port) end, ?WAIT_MS).

listening(Port) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [binary], 200) of
        {ok, S} -> gen_tcp:close(S), true;
        _ -> false
    end.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

missing_token_is_401(Config) ->
    assert_unauthorized(ws_upgrade_raw(?config(port, Config), "/ws")).

bad_token_is_401(Config) ->
    Forged = ws_token:sign(1, erlang:system_time(second) + 60, <<"not-the-secret">>),
    assert_unauthorized(ws_upgrade_raw(?config(port, Config), "/ws?token=" ++ binary_to_list(Forged))),
    assert_unauthorized(ws_upgrade_raw(?config(port, Config), "/ws?token=garbage")).

expired_token_is_401(Config) ->
    Expired = ws_token:sign(1, erlang:system_time(second) - 1, <<?SECRET>>),
    assert_unauthorized(ws_upgrade_raw(?config(port, Config), "/ws?token=" ++ binary_to_list(Expired))).

handshake(Config) ->
    Key = base64:encode(crypto:strong_rand_bytes(16)),
    {101, Headers, _Rest, Sock} = upgrade_request(?config(port, Config),
                                                  "/ws?token=" ++ binary_to_list(token(11)), Key),
    ?assertEqual("websocket", string:lowercase(header("upgrade", Headers))),
    ?assertEqual(binary_to_list(cow_ws:encode_key(Key)), header("sec-websocket-accept", Headers)),
    gen_tcp:close(Sock).

posted_message_reaches_user(Config) ->
    Port = ?config(port, Config),
    C = ws_connect(Port, 21),
    {201, _} = post_ok(post_message(Port, 20, 21, <<"hello over ws">>)),
    {text, Json} = ws_expect(C, text),
    #{<<"type">> := <<"message">>, <<"message">> := Msg} = jiffy:decode(Json, [return_maps]),
    ?assertMatch(#{<<"text">> := <<"hello over ws">>, <<"sender_id">> := 20,
                   <<"receiver_id">> := 21}, Msg),
    ws_close(C).

%% Three fragments with a ping between the first two: the pong must come
%% back at once (control frames may be interleaved), and the reassembled
%% ack must reach message_queue_manager:ack/2.
fragmented_message_reassembled(Config) ->
    UserId = 31,
    C = ws_connect(?config(port, Config), UserId),
    trace_acks(UserId),
    Ack = <<"{\"type\":\"ack\",\"ids\":[\"m-1\",\"m-2\"]}">>,
    <<A:10/binary, B:10/binary, Rest/binary>> = Ack,
    ws_send(C, masked_frame(0, 1, A)),
    ws_send(C, masked_frame(1, 9, <<"mid">>)),
    {pong, <<"mid">>} = ws_expect(C, pong),
    ws_send(C, masked_frame(0, 0, B)),
    ws_send(C, masked_frame(1, 0, Rest)),
    ?assertEqual([<<"m-1">>, <<"m-2">>], expect_ack(UserId)),
    ws_close(C).

%% One ack frame then one ping frame, every byte in its own TCP send.
frame_split_byte_by_byte(Config) ->
    UserId = 41,
    C = ws_connect(?config(port, Config), UserId),
    trace_acks(UserId),
    Bytes = <<(masked_frame(1, 1, <<"{\"type\":\"ack\",\"ids\":[\"b-1\"]}">>))/binary,
              (masked_frame(1, 9, <<"split">>))/binary>>,
    [begin ws_send(C, <<Byte>>), timer:sleep(2) end || <<Byte>> <= Bytes],
    ?assertEqual([<<"b-1">>], expect_ack(UserId)),
    {pong, <<"split">>} = ws_expect(C, pong),
    ws_close(C).

server_ping_and_pong_keep_alive(Config) ->
    os:putenv("MESSAGING_WS_PING_MS", "200"),
    C = ws_connect(?config(port, Config), 51),
    %% Answer pings for 1.2 s (6 intervals, 3x the drop window): still open.
    answer_pings(C, 6),
    ws_send(C, masked_frame(1, 9, <<"alive?">>)),
    {pong, <<"alive?">>} = ws_expect(C, pong),
    ws_close(C).

silent_client_is_dropped(Config) ->
    os:putenv("MESSAGING_WS_PING_MS", "100"),
    C = ws_connect(?config(port, Config), 52),
    {ping, _} = ws_expect(C, ping),
    %% Never answer: the server gives up after two intervals without data.
    closed = ws_expect(C, closed, 2000).

close_handshake(Config) ->
    C = ws_connect(?config(port, Config), 61),
    ws_send(C, masked_frame(1, 8, <<1000:16, "bye">>)),
    {close, <<1000:16>>} = ws_expect(C, close),
    closed = ws_expect(C, closed).

unmasked_frame_is_rejected(Config) ->
    C = ws_connect(?config(port, Config), 71),
    ws_send(C, iolist_to_binary(cow_ws:frame({text, <<"unmasked">>}, #{}))),
    {close, <<1002:16>>} = ws_expect(C, close),
    closed = ws_expect(C, closed).

%% The session is findable cluster-wide through pg and leaves on close.
connection_count_and_pg_membership(Config) ->
    UserId = 81,
    C1 = ws_connect(?config(port, Config), UserId),
    C2 = ws_connect(?config(port, Config), UserId),
    ok = wait_until(fun() -> length(messaging_ws:sessions(UserId)) =:= 2 end, ?WAIT_MS),
    ok = messaging_ws:deliver(UserId, message(UserId, <<"to both">>)),
    [{text, _} = ws_expect(C, text) || C <- [C1, C2]],
    ws_close(C1),
    ws_close(C2),
    ok = wait_until(fun() -> messaging_ws:sessions(UserId) =:= [] end, ?WAIT_MS).

%%--------------------------------------------------------------------
%% Broadcasts: delivered live vs queued, and the message rate
%%--------------------------------------------------------------------

%% One of three recipients has a session open: the broadcast's progress
%% (what /stats lists and what is reported to Django) says 3 delivered, 1 of
%% them online; the online one got it pushed live.
broadcast_counts_recipients_online_and_offline(Config) ->
    Port = ?config(port, Config),
    C = ws_connect(Port, 901),
    ok = wait_until(fun() -> messaging_ws:sessions(901) =/= [] end, ?WAIT_MS),
    Bid = post_broadcast(Port, [901, 902, 903]),
    ok = wait_until(fun() -> broadcast_status(Bid) =:= done end, ?WAIT_MS),
    ?assertMatch({ok, #{delivered := 3, total := 3, online := 1}}, message_broadcast:lookup(Bid)),
    {text, Json} = ws_expect(C, text),
    ?assertMatch(#{<<"message">> := #{<<"broadcast_id">> := Bid}}, jiffy:decode(Json, [return_maps])),
    ws_close(C).

%% "Messages per second" counts what a broadcast sends: before the fix it
%% counted accepted requests only, and stayed at 0 during a broadcast. The
%% 1 s rate compares now with the newest one-second sample; should a sample
%% fall between the fan-out and the reading, the next broadcast is read.
broadcast_messages_count_in_the_message_rate(Config) ->
    Rates = [broadcast_then_rate(?config(port, Config), lists:seq(1000 * N, 1000 * N + 49))
             || N <- lists:seq(1, 3)],
    ct:pal("1 s rates after each broadcast: ~p", [Rates]),
    ?assert(lists:any(fun(Rate) -> Rate > 0 end, Rates)).

broadcast_then_rate(Port, Users) ->
    Before = stats_collector:get(routed, normal),
    Bid = post_broadcast(Port, Users),
    ok = wait_until(fun() -> broadcast_status(Bid) =:= done end, ?WAIT_MS),
    #{rates := #{'1s' := #{normal := Rate}}} = stats_collector:snapshot(),
    ?assert(stats_collector:get(routed, normal) - Before >= length(Users)),
    Rate.

post_broadcast(Port, UserIds) ->
    Body = jiffy:encode(#{sender_id => 1, user_ids => UserIds, text => <<"news">>}),
    {202, Answer} = http(Port, "POST", "/broadcast", service_headers(), Body),
    #{<<"broadcast_id">> := Bid} = jiffy:decode(Answer, [return_maps]),
    Bid.

broadcast_status(Bid) ->
    case message_broadcast:lookup(Bid) of
        {ok, #{status := Status}} -> Status;
        not_found -> not_found
    end.

%%--------------------------------------------------------------------
%% Token expiry and renewal ({"type": "auth", "token": ...})
%%--------------------------------------------------------------------

%% Renewed every half second with 2 s tokens for more than two lifetimes,
%% each renewal answered with auth_ok and the new expiry; a message posted
%% after that still arrives.
renewed_session_outlives_two_token_lifetimes(Config) ->
    Port = ?config(port, Config),
    UserId = 91,
    C = ws_connect(Port, UserId, short_token(UserId)),
    Deadline = now_ms() + 2 * ?SHORT_TTL * 1000 + 500,
    keep_renewing(C, UserId, Deadline),
    {201, _} = post_ok(post_message(Port, 90, UserId, <<"after two lifetimes">>)),
    {text, Json} = ws_expect(C, text),
    ?assertMatch(#{<<"type">> := <<"message">>,
                   <<"message">> := #{<<"text">> := <<"after two lifetimes">>}},
                 jiffy:decode(Json, [return_maps])),
    ws_close(C).

session_without_renewal_closes_at_expiry(Config) ->
    UserId = 92,
    C = ws_connect(?config(port, Config), UserId, short_token(UserId)),
    %% Open until then: a ping is answered.
    ws_send(C, masked_frame(1, 9, <<"still there?">>)),
    {pong, _} = ws_expect(C, pong),
    expect_policy_close(C, <<"token expired">>, (?SHORT_TTL + 2) * 1000).

renewal_with_another_users_token_closes(Config) ->
    C = ws_connect(?config(port, Config), 93),
    ws_send(C, text, auth_frame(token(94))),
    expect_policy_close(C, <<"token for another user">>, ?WAIT_MS).

%% Badly signed, malformed, expired, or not a string at all: each ends the session.
renewal_with_a_bad_token_closes(Config) ->
    Port = ?config(port, Config),
    UserId = 95,
    Now = erlang:system_time(second),
    Cases = [{auth_frame(ws_token:sign(UserId, Now + 300, <<"not-the-secret">>)), <<"invalid token">>},
             {auth_frame(<<"garbage">>), <<"invalid token">>},
             {<<"{\"type\":\"auth\",\"token\":42}">>, <<"invalid token">>},
             {<<"{\"type\":\"auth\"}">>, <<"invalid token">>},
             {auth_frame(ws_token:sign(UserId, Now - 1, <<?SECRET>>)), <<"token expired">>}],
    lists:foreach(fun({Frame, Reason}) ->
                          C = ws_connect(Port, UserId),
                          ws_send(C, text, Frame),
                          expect_policy_close(C, Reason, ?WAIT_MS)
                  end, Cases).

keep_renewing(C, UserId, Deadline) ->
    case now_ms() >= Deadline of
        true ->
            ok;
        false ->
            timer:sleep(500),
            Token = short_token(UserId),
            ws_send(C, text, auth_frame(Token)),
            {text, Json} = ws_expect(C, text),
            ?assertEqual(#{<<"type">> => <<"auth_ok">>, <<"expires_at">> => token_expiry(Token)},
                         jiffy:decode(Json, [return_maps])),
            keep_renewing(C, UserId, Deadline)
    end.

short_token(UserId) ->
    ws_token:sign(UserId, erlang:system_time(second) + ?SHORT_TTL, <<?SECRET>>).

token_expiry(Token) ->
    [_User, Expires, _Sig] = binary:split(Token, <<".">>, [global]),
    binary_to_integer(Expires).

auth_frame(Token) ->
    jiffy:encode(#{type => auth, token => Token}).

expect_policy_close(C, Reason, Timeout) ->
    ?assertEqual({close, <<1008:16, Reason/binary>>}, ws_expect(C, close, Timeout)),
    closed = ws_expect(C, closed).

%%--------------------------------------------------------------------
%% Sessions per user
%%--------------------------------------------------------------------

%% The eleventh is upgraded, then closed with 1008; the ten stay open and
%% receive; once one leaves, a new one is accepted.
eleventh_session_of_a_user_is_refused(Config) ->
    Port = ?config(port, Config),
    UserId = 101,
    [First | _] = Open = [ws_connect(Port, UserId) || _ <- lists:seq(1, ?SESSION_CAP)],
    Eleventh = ws_connect(Port, UserId),
    expect_policy_close(Eleventh, <<"too many connections">>, ?WAIT_MS),
    ?assertEqual(?SESSION_CAP, length(messaging_ws:sessions(UserId))),
    {201, _} = post_ok(post_message(Port, 100, UserId, <<"to all ten">>)),
    [{text, _} = ws_expect(C, text) || C <- Open],
    ws_close(First),
    ok = wait_until(fun() -> length(messaging_ws:sessions(UserId)) < ?SESSION_CAP end, ?WAIT_MS),
    Again = ws_connect(Port, UserId),
    ws_send(Again, masked_frame(1, 9, <<"in">>)),
    {pong, <<"in">>} = ws_expect(Again, pong),
    [ws_close(C) || C <- [Again | tl(Open)]].

%% Many connections of one user at once: however they interleave, at most the
%% cap stay open, and every one that stayed is a live session.
racing_sessions_never_exceed_the_cap(Config) ->
    Port = ?config(port, Config),
    UserId = 102,
    Racers = 3 * ?SESSION_CAP,
    Test = self(),
    Holders = [spawn_link(fun() -> race_connect(Test, Port, UserId) end) || _ <- lists:seq(1, Racers)],
    Outcomes = [receive {raced, Holder, Outcome} -> Outcome after ?WAIT_MS -> ct:fail(race_timeout) end
                || Holder <- Holders],
    Stayed = length([open || open <- Outcomes]),
    ct:pal("~p racing connections: ~p stayed open", [Racers, Stayed]),
    ?assert(Stayed =< ?SESSION_CAP),
    ?assertEqual(Stayed, length(messaging_ws:sessions(UserId))),
    [Holder ! stop || Holder <- Holders],
    ok = wait_until(fun() -> messaging_ws:sessions(UserId) =:= [] end, ?WAIT_MS).

%% Connect, then wait a moment for a refusal; hold the connection until told to stop.
race_connect(Test, Port, UserId) ->
    {Sock, Ref} = C = ws_connect(Port, UserId),
    %% A refused connection may already be closed: its close frame came with the 101.
    _ = gen_tcp:send(Sock, masked_frame(1, 9, <<"open?">>)),
    Outcome = receive
                  {ws, Ref, {close, <<1008:16, _/binary>>}} -> refused;
                  {ws, Ref, {pong, _}} -> open
              after ?WAIT_MS -> no_answer
              end,
    Test ! {raced, self(), Outcome},
    receive stop -> ws_close(C) end.

%%--------------------------------------------------------------------
%% Message size
%%--------------------------------------------------------------------

message_of_the_size_limit_is_accepted(Config) ->
    C = ws_connect(?config(port, Config), 111),
    ws_send(C, text, binary:copy(<<"a">>, ?MAX_MESSAGE_BYTES)),
    ws_send(C, masked_frame(1, 9, <<"after">>)),
    {pong, <<"after">>} = ws_expect(C, pong),
    ws_close(C).

message_over_the_size_limit_is_1009(Config) ->
    C = ws_connect(?config(port, Config), 112),
    ws_send(C, text, binary:copy(<<"a">>, ?MAX_MESSAGE_BYTES + 1)),
    {close, <<1009:16>>} = ws_expect(C, close),
    closed = ws_expect(C, closed).

%% Each fragment is small; the message they make is not (the last fragment counts too).
fragmented_message_over_the_size_limit_is_1009(Config) ->
    C = ws_connect(?config(port, Config), 113),
    Half = binary:copy(<<"a">>, ?MAX_MESSAGE_BYTES div 2),
    ws_send(C, masked_frame(0, 1, Half)),
    ws_send(C, masked_frame(1, 0, <<Half/binary, "a">>)),
    {close, <<1009:16>>} = ws_expect(C, close),
    closed = ws_expect(C, closed).

%%--------------------------------------------------------------------
%% Ack tracing: watch calls to message_queue_manager:ack/2 from the session.
%%--------------------------------------------------------------------

trace_acks(UserId) ->
    [Session] = messaging_ws:sessions(UserId),
    {module, _} = code:ensure_loaded(message_queue_manager),
    1 = erlang:trace_pattern({message_queue_manager, ack, 2}, true, [global]),
    1 = erlang:trace(Session, true, [call]),
    ok.

expect_ack(UserId) ->
    receive
        {trace, _Pid, call, {message_queue_manager, ack, [UserId, Ids]}} -> Ids
    after ?WAIT_MS ->
        ct:fail(no_ack_call)
    end.

answer_pings(_C, 0) ->
    ok;
answer_pings(C, N) ->
    {ping, Payload} = ws_expect(C, ping, 1000),
    ws_send(C, masked_frame(1, 10, Payload)),
    answer_pings(C, N - 1).

%%--------------------------------------------------------------------
%% Raw WebSocket client. A reader process owns the socket and forwards each
%% parsed server frame to the test process as {ws, Ref, Frame}.
%%--------------------------------------------------------------------

token(UserId) ->
    ws_token:sign(UserId, erlang:system_time(second) + 300, <<?SECRET>>).

ws_connect(Port, UserId) ->
    ws_connect(Port, UserId, token(UserId)).

ws_connect(Port, _UserId, Token) ->
    Key = base64:encode(crypto:strong_rand_bytes(16)),
    {101, _Headers, Rest, Sock} = upgrade_request(Port, "/ws?token=" ++ binary_to_list(Token), Key),
    Owner = self(),
    Ref = make_ref(),
    Reader = spawn_link(fun() -> receive go -> ok end, reader(Sock, Owner, Ref, Rest) end),
    ok = gen_tcp:controlling_process(Sock, Reader),
    Reader ! go,
    {Sock, Ref}.

ws_send({Sock, _Ref}, Bytes) ->
    ok = gen_tcp:send(Sock, Bytes).

ws_send(C, text, Payload) ->
    ws_send(C, masked_frame(1, 1, Payload)).

ws_expect(C, Kind) ->
    ws_expect(C, Kind, ?WAIT_MS).

%% Wait for the next frame of Kind; frames of other kinds are skipped
%% (except that a close while waiting for something else fails the test).
ws_expect({_Sock, Ref} = C, Kind, Timeout) ->
    receive
        {ws, Ref, closed} when Kind =:= closed -> closed;
        {ws, Ref, closed} -> ct:fail({closed_while_waiting_for, Kind});
        {ws, Ref, Frame} when element(1, Frame) =:= Kind -> Frame;
        {ws, Ref, {close, _} = Close} when Kind =/= close -> ct:fail({unexpected, Close});
        {ws, Ref, _Other} -> ws_expect(C, Kind, Timeout)
    after Timeout ->
        ct:fail({timeout_waiting_for, Kind})
    end.

ws_close({Sock, _Ref}) ->
    gen_tcp:close(Sock).

reader(Sock, Owner, Ref, Buffer) ->
    Rest = forward_frames(Buffer, Owner, Ref),
    %% The test may close the socket itself (ws_close/1) while this reader still runs:
    %% setopts on a closed socket is {error, einval}, which means "closed" here.
    case inet:setopts(Sock, [{active, once}]) of
        ok ->
            receive
                {tcp, Sock, Data} -> reader(Sock, Owner, Ref, <<Rest/binary, Data/binary>>);
                {tcp_closed, Sock} -> Owner ! {ws, Ref, closed};
                {tcp_error, Sock, _} -> Owner ! {ws, Ref, closed}
            end;
        {error, _} ->
            Owner ! {ws, Ref, closed}
    end.

%% Server frames are never masked nor fragmented by this service.
forward_frames(Buffer, Owner, Ref) ->
    case cow_ws:parse_header(Buffer, #{}, undefined) of
        {Type, Frag, Rsv, Len, Mask, Rest} when byte_size(Rest) >= Len ->
            {ok, Payload, _, Tail} = payload(Rest, Mask, Type, Len, Frag, Rsv),
            Owner ! {ws, Ref, {Type, Payload}},
            forward_frames(Tail, Owner, Ref);
        _ ->
            Buffer
    end.

payload(Rest, Mask, close, Len, Frag, Rsv) ->
    %% Hand the raw close payload (code + reason) to the test.
    <<Payload:Len/binary, Tail/binary>> = Rest,
    _ = cow_ws:parse_payload(Rest, Mask, 0, 0, close, Len, Frag, #{}, Rsv),
    {ok, Payload, 0, Tail};
payload(Rest, Mask, Type, Len, Frag, Rsv) ->
    cow_ws:parse_payload(Rest, Mask, 0, 0, Type, Len, Frag, #{}, Rsv).

%% A client frame: FIN bit, opcode, masked payload (RFC 6455 5.2/5.3).
masked_frame(Fin, Opcode, Payload) ->
    MaskKey = crypto:strong_rand_bytes(4),
    Masked = mask(Payload, MaskKey),
    <<Fin:1, 0:3, Opcode:4, 1:1, (length_field(byte_size(Payload)))/bits,
      MaskKey/binary, Masked/binary>>.

length_field(Len) when Len < 126 -> <<Len:7>>;
length_field(Len) when Len < 65536 -> <<126:7, Len:16>>;
length_field(Len) -> <<127:7, Len:64>>.

mask(Payload, MaskKey) ->
    Key = binary:copy(MaskKey, byte_size(Payload) div 4 + 1),
    crypto:exor(Payload, binary:part(Key, 0, byte_size(Payload))).

%%--------------------------------------------------------------------
%% HTTP over raw sockets (Connection: close, read to EOF).
%%--------------------------------------------------------------------

upgrade_request(Port, Path, Key) ->
    {ok, Sock} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}, {nodelay, true}]),
    ok = gen_tcp:send(Sock, ["GET ", Path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ", Key, "\r\n\r\n"]),
    {Status, Headers, Rest} = read_head(Sock, <<>>),
    {Status, Headers, Rest, Sock}.

ws_upgrade_raw(Port, Path) ->
    Key = base64:encode(crypto:strong_rand_bytes(16)),
    {Status, Headers, Rest, Sock} = upgrade_request(Port, Path, Key),
    Body = read_body(Sock, Headers, Rest),
    gen_tcp:close(Sock),
    {Status, Body}.

assert_unauthorized({Status, Body}) ->
    ?assertEqual(401, Status),
    ?assertMatch(#{<<"error">> := #{<<"code">> := <<"unauthorized">>, <<"message">> := _}},
                 jiffy:decode(Body, [return_maps])).

read_head(Sock, Acc) ->
    case binary:split(Acc, <<"\r\n\r\n">>) of
        [Head, Rest] ->
            [StatusLine | Lines] = binary:split(Head, <<"\r\n">>, [global]),
            [_, Code | _] = binary:split(StatusLine, <<" ">>, [global]),
            {binary_to_integer(Code), [split_header(L) || L <- Lines], Rest};
        [_] ->
            {ok, More} = gen_tcp:recv(Sock, 0, ?WAIT_MS),
            read_head(Sock, <<Acc/binary, More/binary>>)
    end.

split_header(Line) ->
    [K, V] = binary:split(Line, <<":">>),
    {string:lowercase(binary_to_list(K)), string:trim(binary_to_list(V))}.

header(Name, Headers) ->
    proplists:get_value(Name, Headers).

read_body(Sock, Headers, Rest) ->
    case header("content-length", Headers) of
        undefined -> read_to_eof(Sock, Rest);
        Len -> read_exact(Sock, list_to_integer(Len), Rest)
    end.

read_exact(_Sock, Len, Acc) when byte_size(Acc) >= Len ->
    binary:part(Acc, 0, Len);
read_exact(Sock, Len, Acc) ->
    {ok, More} = gen_tcp:recv(Sock, 0, ?WAIT_MS),
    read_exact(Sock, Len, <<Acc/binary, More/binary>>).

read_to_eof(Sock, Acc) ->
    case gen_tcp:recv(Sock, 0, ?WAIT_MS) of
        {ok, More} -> read_to_eof(Sock, <<Acc/binary, More/binary>>);
        {error, closed} -> Acc
    end.

http(Port, Method, Path, Headers, Body) ->
    {ok, Sock} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
    HeaderLines = [[K, ": ", V, "\r\n"] || {K, V} <- Headers],
    ok = gen_tcp:send(Sock, [Method, " ", Path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Connection: close\r\nContent-Type: application/json\r\n"
                             "Content-Length: ", integer_to_list(iolist_size(Body)), "\r\n",
                             HeaderLines, "\r\n", Body]),
    {Status, RespHeaders, Rest} = read_head(Sock, <<>>),
    RespBody = read_body(Sock, RespHeaders, Rest),
    gen_tcp:close(Sock),
    {Status, RespBody}.

%% Django authenticates to the service with the shared secret.
service_headers() ->
    [{"X-Messaging-Token", os:getenv("MESSAGING_SHARED_SECRET", ?SECRET)}].

post_message(Port, SenderId, ReceiverId, Text) ->
    %% No id: the service assigns one (a UUID).
    Body = jiffy:encode(#{conversation_id => SenderId * 1000 + ReceiverId,
                          sender_id => SenderId, receiver_id => ReceiverId,
                          text => Text, priority => <<"normal">>}),
    http(Port, "POST", "/messages", service_headers(), Body).

post_ok({Status, Body}) when Status >= 200, Status < 300 -> {201, Body};
post_ok(Other) -> ct:fail({post_failed, Other}).

message(UserId, Text) ->
    #{id => <<"direct-1">>, conversation_id => 1, sender_id => 1, receiver_id => UserId,
      text => Text, priority => <<"normal">>, created_at => <<"2024-01-01T00:00:00Z">>,
      broadcast_id => null}.

%%--------------------------------------------------------------------
%% Misc
%%--------------------------------------------------------------------

free_port() ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    gen_tcp:close(L),
    Port.

now_ms() ->
    erlang:monotonic_time(millisecond).

wait_until(Fun, Timeout) when Timeout =< 0 ->
    case Fun() of
        true -> ok;
        _ -> {error, timeout}
    end;
wait_until(Fun, Timeout) ->
    case Fun() of
        true -> ok;
        _ -> timer:sleep(20), wait_until(Fun, Timeout - 20)
    end.
