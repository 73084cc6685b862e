%% The HTTP API end to end: the real mochiweb server on a free loopback port,
%% persisting to fake_django on another one.
-module(http_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([health_needs_no_token/1, auth_required/1, bad_json/1, oversize_body/1,
         unknown_priority/1, invalid_fields/1, unknown_path_and_method/1,
         message_queue_ack/1, idempotent_id/1, overflow_drops_oldest/1, batch/1,
         broadcast_progress/1, stats_shape/1, keep_alive/1, persisted_to_django/1]).

-compile({no_auto_import, [get/1]}).
-import(msg_test_util, [post/2, get/1, request/4, wait_until/2, send_message/1]).

all() ->
    [health_needs_no_token, auth_required, bad_json, oversize_body, unknown_priority,
     invalid_fields, unknown_path_and_method, message_queue_ack, idempotent_id,
     overflow_drops_oldest, batch, broadcast_progress, stats_shape, keep_alive,
     persisted_to_django].

init_per_suite(Config) ->
    msg_test_util:start_service(Config, [{message_queue_max_size, 5}, {max_body_bytes, 4096}]),
    Config.

end_per_suite(_Config) ->
    msg_test_util:stop_service().

init_per_testcase(_Case, Config) ->
    fake_django:reset(),
    Config.

end_per_testcase(_Case, _Config) ->
    ok.

%% Without the secret: the status only (ops_SUITE covers the details).
health_needs_no_token(_Config) ->
    ?assertEqual({200, #{<<"status">> => <<"ok">>}}, request(get, "/health", none, [])).

auth_required(_Config) ->
    {401, #{<<"error">> := #{<<"code">> := <<"unauthorized">>}}} =
        request(post, "/messages", #{}, []),
    {401, _} = request(get, "/stats", none, [{"x-messaging-token", "wrong"}]),
    {401, _} = request(get, "/queues/1", none, [{"x-messaging-token", ""}]).

bad_json(_Config) ->
    {400, #{<<"error">> := #{<<"code">> := <<"invalid_json">>}}} =
        post("/messages", <<"{not json">>).

oversize_body(_Config) ->
    Text = binary:copy(<<"x">>, 10000),
    {Status, _} = post("/messages", #{sender_id => 1, receiver_id => 2, text => Text}),
    ?assertEqual(413, Status),
    %% The listener is still fine afterwards.
    {200, _} = get("/stats").

unknown_priority(_Config) ->
    {400, #{<<"error">> := #{<<"code">> := <<"invalid_field">>,
                             <<"fields">> := #{<<"priority">> := _}}}} =
        post("/messages", #{sender_id => 1, receiver_id => 2, text => <<"x">>,
                            priority => <<"urgent">>}).

invalid_fields(_Config) ->
    {400, #{<<"error">> := #{<<"fields">> := Fields}}} =
        post("/messages", #{sender_id => <<"one">>, text => 5}),
    ?assertEqual(lists:sort([<<"sender_id">>, <<"receiver_id">>, <<"text">>]),
                 lists:sort(maps:keys(Fields))),
    {400, _} = post("/messages", [1, 2, 3]).

unknown_path_and_method(_Config) ->
    {404, #{<<"error">> := #{<<"code">> := <<"not_found">>}}} = get("/nowhere"),
    {405, #{<<"error">> := #{<<"code">> := <<"method_not_allowed">>}}} = get("/messages"),
    {400, _} = get("/queues/not-a-number").

message_queue_ack(_Config) ->
    {202, #{<<"id">> := Id, <<"status">> := <<"accepted">>, <<"priority">> := <<"high">>,
            <<"dropped">> := 0}} =
        post("/messages", #{sender_id => 1, receiver_id => 100, text => <<"hi">>,
                            priority => <<"high">>, conversation_id => 9}),
    {200, #{<<"user_id">> := 100, <<"messages">> := [Msg], <<"dropped">> := 0}} =
        get("/queues/100"),
    ?assertMatch(#{<<"id">> := Id, <<"conversation_id">> := 9, <<"sender_id">> := 1,
                   <<"receiver_id">> := 100, <<"text">> := <<"hi">>,
                   <<"priority">> := <<"high">>, <<"broadcast_id">> := null,
                   <<"created_at">> := _}, Msg),
    {200, #{<<"acknowledged">> := 1}} = post("/queues/100/ack", #{ids => [Id, <<"unknown">>]}),
    {200, #{<<"messages">> := []}} = get("/queues/100").

idempotent_id(_Config) ->
    Id = <<"3f0c9d3e-6a7b-4c1d-9e2f-0123456789ab">>,
    Body = #{id => Id, sender_id => 1, receiver_id => 101, text => <<"once">>},
    {202, #{<<"id">> := Id}} = post("/messages", Body),
    {202, #{<<"id">> := Id}} = post("/messages", Body),
    {200, #{<<"messages">> := [_]}} = get("/queues/101").

overflow_drops_oldest(_Config) ->
    Ids = [begin {ok, Id} = send_message(#{receiver_id => 102, text => integer_to_binary(N)}), Id end
           || N <- lists:seq(1, 5)],
    {202, #{<<"dropped">> := 1}} =
        post("/messages", #{sender_id => 1, receiver_id => 102, text => <<"6">>}),
    {202, #{<<"dropped">> := 1}} =
        post("/messages", #{sender_id => 1, receiver_id => 102, text => <<"7">>}),
    {200, #{<<"messages">> := Msgs, <<"dropped">> := 2}} = get("/queues/102"),
    ?assertEqual([<<"3">>, <<"4">>, <<"5">>, <<"6">>, <<"7">>],
                 [T || #{<<"text">> := T} <- Msgs]),
    ?assertNot(lists:member(hd(Ids), [I || #{<<"id">> := I} <- Msgs])).

batch(_Config) ->
    Good = #{sender_id => 1, receiver_id => 103, text => <<"b">>},
    {202, #{<<"results">> := [R1, R2, R3]}} =
        post("/messages/batch", #{messages => [Good, #{sender_id => 1}, Good#{priority => <<"low">>}]}),
    ?assertMatch(#{<<"status">> := <<"accepted">>, <<"id">> := _, <<"dropped">> := 0}, R1),
    ?assertMatch(#{<<"index">> := 1, <<"error">> := #{<<"code">> := <<"invalid_field">>}}, R2),
    ?assertMatch(#{<<"priority">> := <<"low">>}, R3),
    {200, #{<<"messages">> := [_, _]}} = get("/queues/103"),
    {400, _} = post("/messages/batch", #{messages => 7}).

broadcast_progress(_Config) ->
    Users = lists:seq(2000, 2049),
    {202, #{<<"broadcast_id">> := Bid, <<"total">> := 50}} =
        post("/broadcast", #{sender_id => 1, user_ids => Users, text => <<"news">>,
                             priority => <<"low">>}),
    ok = wait_until(fun() ->
                            fake_django:progress(Bid) =:=
                                #{<<"delivered">> => 50, <<"total">> => 50, <<"status">> => <<"done">>,
                                  <<"online">> => 0}
                    end, 10000),
    {200, #{<<"messages">> := [Msg]}} = get("/queues/2000"),
    ?assertMatch(#{<<"broadcast_id">> := Bid, <<"conversation_id">> := null}, Msg),
    {200, #{<<"broadcasts">> := Bcasts}} = get("/stats"),
    ?assert(lists:member(#{<<"id">> => Bid, <<"delivered">> => 50, <<"total">> => 50,
                           <<"status">> => <<"done">>, <<"online">> => 0}, Bcasts)),
    %% Every recipient's message reaches Django too.
    ok = wait_until(fun() -> length(fake_django:ids()) >= 50 end, 10000),
    %% Same id again: same answer, no second fan-out.
    {202, #{<<"broadcast_id">> := Bid}} =
        post("/broadcast", #{id => Bid, sender_id => 1, user_ids => Users, text => <<"news">>}),
    {200, #{<<"messages">> := [_]}} = get("/queues/2000").

stats_shape(_Config) ->
    {ok, _} = send_message(#{priority => <<"low">>}),
    {200, Stats} = get("/stats"),
    Keys = [<<"node">>, <<"uptime_seconds">>, <<"accepted">>, <<"routed">>, <<"delivered">>,
            <<"dropped">>, <<"persisted">>, <<"rates">>, <<"queue_depth">>,
            <<"pending_persistence">>, <<"wal_unconfirmed">>, <<"persistence_failures">>,
            <<"connections">>,
            <<"memory_bytes">>, <<"process_count">>, <<"broadcasts">>, <<"cluster_nodes">>],
    ?assertEqual(lists:sort(Keys), lists:sort(maps:keys(Stats))),
    Prios = lists:sort([<<"high">>, <<"normal">>, <<"low">>]),
    [?assertEqual(Prios, lists:sort(maps:keys(maps:get(K, Stats))))
     || K <- [<<"accepted">>, <<"routed">>, <<"delivered">>, <<"dropped">>, <<"persisted">>]],
    #{<<"1s">> := R1, <<"60s">> := R60} = maps:get(<<"rates">>, Stats),
    ?assertEqual(Prios, lists:sort(maps:keys(R1))),
    ?assertEqual(Prios, lists:sort(maps:keys(R60))),
    ?assertMatch(#{<<"total">> := _, <<"users">> := _, <<"max">> := _},
                 maps:get(<<"queue_depth">>, Stats)),
    ?assertMatch(#{<<"http">> := _, <<"websocket">> := _}, maps:get(<<"connections">>, Stats)),
    ?assert(maps:get(<<"low">>, maps:get(<<"accepted">>, Stats)) >= 1).

keep_alive(_Config) ->
    Port = list_to_integer(lists:last(string:split(msg_test_util:app_url(), ":", trailing))),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
    Req = <<"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n">>,
    [begin
         ok = gen_tcp:send(S, Req),
         {ok, Data} = gen_tcp:recv(S, 0, 5000),
         ?assertMatch(<<"HTTP/1.1 200", _/binary>>, Data)
     end || _ <- lists:seq(1, 3)],
    gen_tcp:close(S).

persisted_to_django(_Config) ->
    Ids = [begin {ok, Id} = send_message(#{conversation_id => 42}), Id end
           || _ <- lists:seq(1, 20)],
    ok = wait_until(fun() -> fake_django:has_all(Ids) end, 10000),
    ok = wait_until(fun() ->
                            {200, #{<<"pending_persistence">> := P}} = get("/stats"),
                            P =:= 0
                    end, 10000),
    {200, #{<<"django">> := #{<<"reachable">> := true}}} = get("/health").
