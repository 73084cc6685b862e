%% The HTTP edge under a raw fuzzer: bytes written with gen_tcp, answers read
%% back whole. Each table row is one request; every refusal must be a 4xx/5xx
%% with the service's JSON error document, the connection closed after it,
%% the listener the same process as before and GET /health still 200.
%% Timeouts are shortened (500-700 ms) so the slow-client cases take a few
%% seconds in all.
-module(edge_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([framing_is_refused/1, line_limits/1, big_cookie_opens_websocket/1,
         json_fuzz/1, poison_messages/1, poison_in_batch_items/1, poison_broadcasts/1,
         oversize_bodies/1, slow_headers_are_cut_off/1, silent_client_is_cut_off/1,
         idle_keep_alive_is_closed/1, stalled_bodies_are_cut_off/1,
         head_works_where_get_does/1]).

-define(TOKEN, "dev-messaging-secret").
-define(HEADER_TIMEOUT_MS, 500).
-define(IDLE_TIMEOUT_MS, 700).
-define(BODY_TIMEOUT_MS, 500).
%% Room for 100000 nested arrays (200 KB).
-define(MAX_BODY, 262144).
-define(MAX_BIGINT, 9223372036854775807).
%% Longest wait for one answer; the timeouts above are far shorter.
-define(ANSWER_MS, 3000).

suite() ->
    [{timetrap, {seconds, 60}}].

all() ->
    [framing_is_refused, line_limits, big_cookie_opens_websocket, json_fuzz, poison_messages,
     poison_in_batch_items, poison_broadcasts, oversize_bodies, slow_headers_are_cut_off,
     silent_client_is_cut_off, idle_keep_alive_is_closed, stalled_bodies_are_cut_off,
     head_works_where_get_does].

init_per_suite(Config) ->
    Port = msg_test_util:start_service(Config, [{http_header_timeout_ms, ?HEADER_TIMEOUT_MS},
                                                {http_idle_timeout_ms, ?IDLE_TIMEOUT_MS},
                                                {http_body_timeout_ms, ?BODY_TIMEOUT_MS},
                                                {max_body_bytes, ?MAX_BODY}]),
    [{port, Port}, {listener, whereis(messaging_http)} | Config].

end_per_suite(_Config) ->
    msg_test_util:stop_service().

init_per_testcase(_Case, Config) ->
    fake_django:reset(),
    Config.

end_per_testcase(_Case, Config) ->
    assert_service_up(Config).

%%====================================================================
%% Framing and limits
%%====================================================================

framing_is_refused(Config) ->
    Post = fun(Headers, Body) -> [<<"POST /messages HTTP/1.1\r\nHost: x\r\n">>, auth(),
                                  Headers, <<"\r\n">>, Body] end,
    Good = <<"{\"sender_id\":1,\"receiver_id\":2,\"text\":\"hi\"}">>,
    run_cases(Config, [
        {junk_request_line, <<"HELLO\r\n\r\n">>, 400},
        {binary_request_line, <<0, 1, 2, 255, "\r\n\r\n">>, 400},
        {space_in_uri, <<"GET /he alth HTTP/1.1\r\n\r\n">>, 400},
        {response_as_request, <<"HTTP/1.1 200 OK\r\n\r\n">>, 400},
        {header_without_colon, <<"GET /health HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n">>, 400},
        {header_name_with_space, <<"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n">>, 400},
        {http_2_0, <<"GET /health HTTP/2.0\r\nHost: x\r\n\r\n">>, 505},
        {http_0_9, <<"GET /health\r\n">>, 505},
        {http_1_9, <<"GET /health HTTP/1.9\r\nHost: x\r\n\r\n">>, 505},
        {negative_content_length, Post(<<"Content-Length: -5\r\n">>, <<>>), 400},
        {non_numeric_content_length, Post(<<"Content-Length: abc\r\n">>, Good), 400},
        {hex_content_length, Post(<<"Content-Length: 0x20\r\n">>, Good), 400},
        {signed_content_length, Post(<<"Content-Length: +5\r\n">>, Good), 400},
        {empty_content_length, Post(<<"Content-Length:\r\n">>, Good), 400},
        {conflicting_content_length,
         Post(<<"Content-Length: 5\r\nContent-Length: 6\r\n">>, Good), 400},
        {listed_content_length, Post(<<"Content-Length: 5, 6\r\n">>, Good), 400},
        {content_length_with_transfer_encoding,
         Post(<<"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n">>, chunked(Good)), 400},
        {gzip_transfer_encoding, Post(<<"Transfer-Encoding: gzip\r\n">>, Good), 400},
        {gzip_then_chunked, Post(<<"Transfer-Encoding: gzip, chunked\r\n">>, chunked(Good)), 400},
        {bad_chunk_size, Post(<<"Transfer-Encoding: chunked\r\n">>, <<"zz\r\nhello\r\n0\r\n\r\n">>), 400},
        {negative_chunk_size, Post(<<"Transfer-Encoding: chunked\r\n">>, <<"-5\r\nhello\r\n0\r\n\r\n">>), 400},
        {chunk_without_crlf, Post(<<"Transfer-Encoding: chunked\r\n">>, <<"2\r\nhello0\r\n\r\n">>), 400}
    ]),
    %% Well-framed requests still go through, chunked included.
    {202, _, _} = exchange(Config, Post([<<"Transfer-Encoding: Chunked\r\nConnection: close\r\n">>],
                                        chunked(Good))),
    Length = integer_to_binary(byte_size(Good)),
    {202, _, _} = exchange(Config, Post([<<"Content-Length: ">>, Length, <<" \r\nConnection: close\r\n">>],
                                        Good)).

line_limits(Config) ->
    MaxLine = 8192,
    %% "GET /health?p=...  HTTP/1.1\r\n" of exactly N bytes.
    RequestLine = fun(N) ->
                          Pad = binary:copy(<<"a">>, N - byte_size(<<"GET /health?p= HTTP/1.1\r\n">>)),
                          <<"GET /health?p=", Pad/binary, " HTTP/1.1\r\n">>
                  end,
    %% "Cookie: c=...\r\n" of exactly N bytes.
    HeaderLine = fun(Name, N) ->
                         Pad = binary:copy(<<"v">>, N - byte_size(<<Name/binary, ": c=\r\n">>)),
                         <<Name/binary, ": c=", Pad/binary, "\r\n">>
                 end,
    Close = <<"Connection: close\r\n\r\n">>,
    {200, _, _} = exchange(Config, [RequestLine(MaxLine), Close]),
    {200, _, _} = exchange(Config, [<<"GET /health HTTP/1.1\r\n">>, HeaderLine(<<"Cookie">>, MaxLine),
                                    Close]),
    %% 100 headers of 300 bytes: the most lines allowed, within 32 KB.
    Hundred = [HeaderLine(<<"X-H", (integer_to_binary(I))/binary>>, 300) || I <- lists:seq(1, 100)],
    {200, _, _} = exchange(Config, [<<"GET /health HTTP/1.1\r\n">>, lists:droplast(Hundred), Close]),
    run_cases(Config, [
        {request_line_over_8k, [RequestLine(MaxLine + 1), Close], 414},
        {request_line_64k, [RequestLine(65536), Close], 414},
        {header_line_over_8k, [<<"GET /health HTTP/1.1\r\n">>, HeaderLine(<<"Cookie">>, MaxLine + 1),
                               Close], 431},
        {too_many_headers, [<<"GET /health HTTP/1.1\r\n">>, Hundred, Close], 431},
        {headers_over_32k, [<<"GET /health HTTP/1.1\r\n">>,
                            [HeaderLine(<<"X-Big", (integer_to_binary(I))/binary>>, 8000)
                             || I <- lists:seq(1, 5)], Close], 431}
    ]).

%% The point of 8 KB lines: a browser sends its cookies with the upgrade.
big_cookie_opens_websocket(Config) ->
    Token = ws_token:sign(7, erlang:system_time(second) + 60, <<?TOKEN>>),
    Cookie = <<"Cookie: session=", (binary:copy(<<"c">>, 8000))/binary, "\r\n">>,
    S = connect(Config),
    ok = gen_tcp:send(S, [<<"GET /ws?token=">>, Token, <<" HTTP/1.1\r\nHost: x\r\n">>, Cookie,
                          <<"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n">>]),
    {ok, Answer} = gen_tcp:recv(S, 0, ?ANSWER_MS),
    ?assertMatch(<<"HTTP/1.1 101 ", _/binary>>, Answer),
    gen_tcp:close(S).

%%====================================================================
%% Bodies
%%====================================================================

json_fuzz(Config) ->
    Deep = fun(N) -> [lists:duplicate(N, $[), lists:duplicate(N, $])] end,
    DeepObject = fun(N) -> [lists:duplicate(N, <<"{\"a\":">>), <<"1">>, lists:duplicate(N, $})] end,
    run_posts(Config, "/messages", [
        {not_json, <<"{not json">>, 400},
        {empty_body, <<>>, 400},
        {binary_garbage, crypto:strong_rand_bytes(2000), 400},
        {truncated_json, <<"{\"sender_id\": 1, \"text\": \"abc">>, 400},
        {trailing_garbage, <<"{\"sender_id\":1,\"receiver_id\":2,\"text\":\"x\"} trailing">>, 400},
        {nested_arrays_100k, Deep(100000), 400},
        {unbalanced_arrays_100k, lists:duplicate(60000, $[), 400},
        {nested_objects_10k, DeepObject(10000), 400},
        {huge_number, <<"{\"sender_id\":1e400,\"receiver_id\":2,\"text\":\"x\"}">>, 400},
        {body_is_array, <<"[1,2,3]">>, 400},
        {body_is_string, <<"\"text\"">>, 400},
        {body_is_null, <<"null">>, 400},
        {text_is_number, message(#{text => 5}), 400},
        {text_is_object, message(#{text => #{a => 1}}), 400},
        {text_is_list, message(#{text => [<<"a">>]}), 400},
        {sender_is_string, message(#{sender_id => <<"1">>}), 400},
        {sender_is_float, message(#{sender_id => 1.0}), 400},
        {sender_is_bool, message(#{sender_id => true}), 400},
        {priority_is_number, message(#{priority => 3}), 400},
        {id_not_uuid, message(#{id => <<"not-a-uuid">>}), 400}
    ]).

poison_messages(Config) ->
    run_posts(Config, "/messages", [
        {nul_in_text, message(#{text => <<"before", 0, "after">>}), 400},
        {escaped_nul_in_text, <<"{\"sender_id\":1,\"receiver_id\":21,\"text\":\"a\\u0000b\"}">>, 400},
        {lone_surrogate, <<"{\"sender_id\":1,\"receiver_id\":21,\"text\":\"\\ud800\"}">>, 400},
        {invalid_utf8_bytes, <<"{\"sender_id\":1,\"receiver_id\":21,\"text\":\"caf", 16#E9, "\"}">>, 400},
        {blank_text, message(#{text => <<"  \t\r\n ">>}), 400},
        {unicode_blank_text, message(#{text => <<16#A0/utf8, 16#3000/utf8>>}), 400},
        {text_over_5000_chars, message(#{text => binary:copy(<<"é"/utf8>>, 5001)}), 400},
        {huge_string, message(#{text => binary:copy(<<"x">>, ?MAX_BODY - 200)}), 400},
        {sender_zero, message(#{sender_id => 0}), 400},
        {sender_negative, message(#{sender_id => -3}), 400},
        {sender_over_bigint, message(#{sender_id => ?MAX_BIGINT + 1}), 400},
        {receiver_huge, message(#{receiver_id => 1 bsl 200}), 400},
        {conversation_zero, message(#{conversation_id => 0}), 400},
        {conversation_negative, message(#{conversation_id => -1}), 400},
        {conversation_over_bigint, message(#{conversation_id => ?MAX_BIGINT + 1}), 400}
    ]),
    ?assertEqual([], queue_of(Config, 21)),
    %% The limits themselves are fine.
    {202, _, _} = post(Config, "/messages", message(#{text => binary:copy(<<"é"/utf8>>, 5000),
                                                      receiver_id => 22, sender_id => ?MAX_BIGINT,
                                                      conversation_id => ?MAX_BIGINT})),
    ?assertEqual(1, length(queue_of(Config, 22))).

poison_in_batch_items(Config) ->
    Good = #{sender_id => 1, receiver_id => 31, text => <<"good">>},
    Items = [Good, Good#{text => <<"a", 0>>}, Good#{text => <<" ">>},
             Good#{receiver_id => ?MAX_BIGINT + 1}, Good#{conversation_id => 0}, Good],
    {202, _, #{<<"results">> := Results}} = post(Config, "/messages/batch",
                                                 jiffy:encode(#{messages => Items})),
    [R0, R1, R2, R3, R4, R5] = Results,
    [?assertMatch(#{<<"status">> := <<"accepted">>}, R) || R <- [R0, R5]],
    [?assertMatch(#{<<"index">> := I, <<"error">> := #{<<"code">> := <<"invalid_field">>,
                                                      <<"fields">> := #{Field := _}}}, R)
     || {I, Field, R} <- [{1, <<"text">>, R1}, {2, <<"text">>, R2}, {3, <<"receiver_id">>, R3},
                          {4, <<"conversation_id">>, R4}]],
    ?assertEqual(2, length(queue_of(Config, 31))).

poison_broadcasts(Config) ->
    Broadcast = fun(Fields) -> jiffy:encode(maps:merge(#{sender_id => 1, user_ids => [41, 42],
                                                         text => <<"news">>}, Fields)) end,
    run_posts(Config, "/broadcast", [
        {nul_in_text, Broadcast(#{text => <<0>>}), 400},
        {blank_text, Broadcast(#{text => <<"\n">>}), 400},
        {text_over_5000_chars, Broadcast(#{text => binary:copy(<<"x">>, 5001)}), 400},
        {user_id_zero, Broadcast(#{user_ids => [41, 0]}), 400},
        {user_id_over_bigint, Broadcast(#{user_ids => [?MAX_BIGINT + 1]}), 400},
        {user_ids_not_list, Broadcast(#{user_ids => 41}), 400},
        {sender_over_bigint, Broadcast(#{sender_id => ?MAX_BIGINT + 1}), 400}
    ]),
    ?assertEqual([], queue_of(Config, 41)).

oversize_bodies(Config) ->
    Head = fun(Headers) -> [<<"POST /messages HTTP/1.1\r\nHost: x\r\n">>, auth(), Headers, <<"\r\n">>] end,
    Chunk = binary:copy(<<"x">>, ?MAX_BODY + 10),
    run_cases(Config, [
        %% Refused on the declared length, before any byte of the body.
        {declared_too_large, Head(<<"Content-Length: 1000000000\r\n">>), 413},
        {declared_beyond_int64, Head(<<"Content-Length: 99999999999999999999999\r\n">>), 413},
        {chunked_too_large, [Head(<<"Transfer-Encoding: chunked\r\n">>),
                             integer_to_binary(byte_size(Chunk), 16), <<"\r\n">>, Chunk, <<"\r\n">>], 413}
    ]).

%%====================================================================
%% Slow and idle clients
%%====================================================================

%% Three clients each trickle a header line every 100 ms: the deadline is
%% counted from the accept, so each one is answered 408 and cut off after
%% HEADER_TIMEOUT_MS although it never paused long.
slow_headers_are_cut_off(Config) ->
    Self = self(),
    Clients = [spawn_link(fun() -> Self ! {self(), trickle_headers(Config)} end)
               || _ <- lists:seq(1, 3)],
    Results = [receive {C, Result} -> Result after 5000 -> error(no_result) end || C <- Clients],
    [begin
         ?assertMatch({408, _, _}, Answer),
         ?assert(ElapsedMs >= ?HEADER_TIMEOUT_MS - 50),
         ?assert(ElapsedMs < ?HEADER_TIMEOUT_MS + 1000)
     end || {Answer, ElapsedMs} <- Results].

trickle_headers(Config) ->
    S = connect(Config),
    Started = erlang:monotonic_time(millisecond),
    ok = gen_tcp:send(S, <<"GET /health HTTP/1.1\r\n">>),
    Answer = trickle(S, 1),
    {Answer, erlang:monotonic_time(millisecond) - Started}.

%% A header line every 100 ms until the server answers (at most 40 lines);
%% no byte is sent after the answer began, so the close stays clean.
trickle(S, N) when N =< 40 ->
    case gen_tcp:recv(S, 0, 100) of
        {error, timeout} ->
            ok = gen_tcp:send(S, [<<"X-Slow-">>, integer_to_binary(N), <<": 1\r\n">>]),
            trickle(S, N + 1);
        {ok, Data} ->
            {Rest, _End} = read_to_close(S),
            parse_answer(<<Data/binary, Rest/binary>>);
        {error, closed} ->
            {no_answer, closed}
    end;
trickle(_S, _N) ->
    {no_answer, still_open}.

silent_client_is_cut_off(Config) ->
    S = connect(Config),
    Started = erlang:monotonic_time(millisecond),
    ?assertMatch({408, _, _}, read_answer(S)),
    ?assert(erlang:monotonic_time(millisecond) - Started < ?HEADER_TIMEOUT_MS + 1000).

idle_keep_alive_is_closed(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"GET /health HTTP/1.1\r\nHost: x\r\n\r\n">>),
    {ok, <<"HTTP/1.1 200 ", _/binary>>} = gen_tcp:recv(S, 0, ?ANSWER_MS),
    %% Still open within the idle time (a second request works) ...
    timer:sleep(?IDLE_TIMEOUT_MS div 2),
    ok = gen_tcp:send(S, <<"GET /health HTTP/1.1\r\nHost: x\r\n\r\n">>),
    {ok, <<"HTTP/1.1 200 ", _/binary>>} = gen_tcp:recv(S, 0, ?ANSWER_MS),
    %% ... closed without a word after it.
    Idle = erlang:monotonic_time(millisecond),
    ?assertEqual({error, closed}, gen_tcp:recv(S, 0, ?ANSWER_MS)),
    ?assert(erlang:monotonic_time(millisecond) - Idle >= ?IDLE_TIMEOUT_MS - 50).

stalled_bodies_are_cut_off(Config) ->
    Head = [<<"POST /messages HTTP/1.1\r\nHost: x\r\n">>, auth()],
    %% Content-Length: 10 of 100 bytes sent, then nothing: 408 JSON.
    S1 = connect(Config),
    ok = gen_tcp:send(S1, [Head, <<"Content-Length: 100\r\n\r\n{\"sender_\"">>]),
    ?assertMatch({408, _, #{<<"error">> := _}}, read_answer(S1)),
    %% One chunk, then nothing: the connection is closed.
    S2 = connect(Config),
    Started = erlang:monotonic_time(millisecond),
    ok = gen_tcp:send(S2, [Head, <<"Transfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n">>]),
    ?assertEqual({error, closed}, gen_tcp:recv(S2, 0, ?ANSWER_MS)),
    ?assert(erlang:monotonic_time(millisecond) - Started < ?BODY_TIMEOUT_MS + 1000).

%%====================================================================
%% HEAD
%%====================================================================

head_works_where_get_does(Config) ->
    [begin
         {GetStatus, GetHeaders, _} = exchange(Config, request("GET", Path)),
         {HeadStatus, HeadHeaders, HeadBody} = exchange(Config, request("HEAD", Path)),
         ?assertEqual({Path, GetStatus}, {Path, HeadStatus}),
         ?assertEqual(<<>>, HeadBody),
         [?assertEqual({Path, Name, header(Name, GetHeaders)}, {Path, Name, header(Name, HeadHeaders)})
          || Name <- [<<"content-type">>, <<"allow">>]],
         ?assertNotEqual(undefined, header(<<"content-length">>, HeadHeaders))
     end || Path <- ["/health", "/stats", "/queues/5", "/queues/abc", "/nowhere", "/messages",
                     "/messages/batch", "/broadcast", "/queues/5/ack"]],
    %% Where GET is allowed, so is HEAD; /ws is a GET-only handshake.
    [?assertEqual({Path, <<"GET, HEAD">>}, {Path, header(<<"allow">>, element(2, exchange(Config, request("POST", Path))))})
     || Path <- ["/health", "/stats", "/queues/5"]],
    {405, WsHeaders, _} = exchange(Config, request("HEAD", "/ws")),
    ?assertEqual(<<"GET">>, header(<<"allow">>, WsHeaders)).

%%====================================================================
%% Running cases
%%====================================================================

%% Sends each {Name, Bytes, Status} on a new connection; collects every row
%% whose answer is not Status with a JSON error and a close, then fails
%% listing them all (so a run shows each broken case at once).
run_cases(Config, Cases) ->
    Failed = [{Name, Got} || {Name, Bytes, Status} <- Cases,
                             Got <- [refusal(Config, Bytes)],
                             not is_refusal(Status, Got)],
    [ct:pal("~p: ~P", [Name, Got, 20]) || {Name, Got} <- Failed],
    ?assertEqual([], [Name || {Name, _} <- Failed]).

run_posts(Config, Path, Cases) ->
    run_cases(Config, [{Name, [post_head(Path, iolist_size(Body)), Body], Status}
                       || {Name, Body, Status} <- Cases]).

refusal(Config, Bytes) ->
    S = connect(Config),
    %% The server may close before taking every byte; the answer still counts.
    _ = gen_tcp:send(S, Bytes),
    {Data, End} = read_to_close(S),
    gen_tcp:close(S),
    assert_service_up(Config),
    {parse_answer(Data), End =:= closed}.

is_refusal(Status, {{Status, Headers, #{<<"error">> := #{<<"code">> := Code, <<"message">> := Msg}}},
                    true}) ->
    is_binary(Code) andalso is_binary(Msg)
        andalso header(<<"content-type">>, Headers) =:= <<"application/json">>;
is_refusal(_Status, _Got) ->
    false.

assert_service_up(Config) ->
    Listener = ?config(listener, Config),
    ?assert(is_process_alive(Listener)),
    ?assertEqual(Listener, whereis(messaging_http)),
    ?assertMatch({200, _, #{<<"status">> := <<"ok">>}}, exchange(Config, request("GET", "/health"))).

%%====================================================================
%% Raw HTTP client
%%====================================================================

connect(Config) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, ?config(port, Config), [binary, {active, false}]),
    S.

auth() ->
    <<"X-Messaging-Token: ", ?TOKEN, "\r\n">>.

request(Method, Path) ->
    [Method, " ", Path, " HTTP/1.1\r\nHost: x\r\n", auth(), "Connection: close\r\n\r\n"].

%% A well-framed POST: a refusal of its body need not close the connection,
%% so the client asks for the close.
post_head(Path, Length) ->
    [<<"POST ">>, Path, <<" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n">>, auth(),
     <<"Connection: close\r\nContent-Length: ">>, integer_to_binary(Length), <<"\r\n\r\n">>].

post(Config, Path, Body) ->
    exchange(Config, [post_head(Path, iolist_size(Body)) | Body]).

message(Fields) ->
    jiffy:encode(maps:merge(#{sender_id => 1, receiver_id => 21, text => <<"hello">>}, Fields)).

chunked(Body) ->
    [integer_to_binary(byte_size(Body), 16), <<"\r\n">>, Body, <<"\r\n0\r\n\r\n">>].

queue_of(Config, UserId) ->
    {200, _, #{<<"messages">> := Messages}} =
        exchange(Config, request("GET", "/queues/" ++ integer_to_list(UserId))),
    Messages.

%% One request on its own connection: {Status, Headers, DecodedBody}.
exchange(Config, Bytes) ->
    S = connect(Config),
    ok = gen_tcp:send(S, Bytes),
    Answer = read_answer(S),
    gen_tcp:close(S),
    Answer.

%% Everything up to the close (every request here ends with one), parsed;
%% {no_answer, Bytes} when nothing well-formed came within ANSWER_MS.
read_answer(S) ->
    {Data, _End} = read_to_close(S),
    parse_answer(Data).

%% -> {Bytes, closed | timeout | OtherError}
read_to_close(S) ->
    read_to_close(S, erlang:monotonic_time(millisecond) + ?ANSWER_MS, []).

read_to_close(S, Deadline, Acc) ->
    case gen_tcp:recv(S, 0, max(0, Deadline - erlang:monotonic_time(millisecond))) of
        {ok, Data} -> read_to_close(S, Deadline, [Acc, Data]);
        {error, End} -> {iolist_to_binary(Acc), End}
    end.

parse_answer(Data) ->
    case binary:split(Data, <<"\r\n\r\n">>) of
        [Head, Body] ->
            [StatusLine | Lines] = binary:split(Head, <<"\r\n">>, [global]),
            <<"HTTP/1.", _, " ", Code:3/binary, _/binary>> = StatusLine,
            Headers = [{string:lowercase(Name), string:trim(Value)}
                       || Line <- Lines, [Name, Value] <- [binary:split(Line, <<":">>)]],
            {binary_to_integer(Code), Headers, decode(Body)};
        [_NoHead] ->
            {no_answer, Data}
    end.

header(Name, Headers) ->
    proplists:get_value(Name, Headers).

decode(<<>>) -> <<>>;
decode(Body) -> try jiffy:decode(Body, [return_maps]) catch _:_ -> Body end.
