%% Fault injection: workers killed under load, Django down for a while, and
%% the whole node killed with SIGKILL mid-stream. In every case each message
%% the service acknowledged (202) must reach (fake) Django.
-module(fault_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([kill_workers_under_load/1, django_down_then_back/1, kill_9_node/1]).

-define(WAIT_MS, 30000).

all() ->
    [kill_workers_under_load, django_down_then_back, kill_9_node].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(inets),
    {ok, _} = application:ensure_all_started(mochiweb),
    {ok, _} = fake_django:start(),
    Config.

end_per_suite(_Config) ->
    fake_django:stop().

init_per_testcase(kill_9_node, Config) ->
    fake_django:reset(),
    Config;
init_per_testcase(Case, Config) ->
    fake_django:reset(),
    DataDir = filename:join(?config(priv_dir, Config), atom_to_list(Case)),
    msg_test_util:start_app(DataDir, [{persist_batch_size, 50}]),
    Config.

end_per_testcase(kill_9_node, _Config) ->
    ok;
end_per_testcase(_Case, _Config) ->
    msg_test_util:stop_app().

%%====================================================================
%% Cases
%%====================================================================

kill_workers_under_load(_Config) ->
    Self = self(),
    Senders = [spawn_link(fun() -> Self ! {acked, self(), send_many(W, 150)} end)
               || W <- lists:seq(1, 8)],
    Killer = spawn_link(fun() -> kill_loop(25) end),
    Acked = lists:append([receive {acked, P, Ids} -> Ids after 120000 -> error(sender_timeout) end
                          || P <- Senders]),
    unlink(Killer), exit(Killer, kill),
    ct:pal("~p messages acknowledged while killing workers", [length(Acked)]),
    ?assert(length(Acked) > 100),
    ok = msg_test_util:wait_until(fun() -> fake_django:has_all(Acked) end, ?WAIT_MS),
    %% The supervisor brought every worker back.
    [?assert(is_pid(whereis(Name))) || Name <- [message_queue_manager, message_persistence,
                                                message_router_1]].

django_down_then_back(_Config) ->
    fake_django:set_mode(fail),
    Ids = [begin {ok, Id} = msg_test_util:send_message(#{conversation_id => 77,
                                                         text => integer_to_binary(N)}), Id end
           || N <- lists:seq(1, 60)],
    timer:sleep(1500),
    ?assertEqual([], fake_django:ids()),
    {200, #{<<"pending_persistence">> := 60, <<"persistence_failures">> := Failures}} =
        msg_test_util:get("/stats"),
    ?assert(Failures > 0),
    {200, #{<<"django">> := #{<<"reachable">> := _}}} = msg_test_util:get("/health"),
    fake_django:set_mode(ok),
    ok = msg_test_util:wait_until(fun() -> fake_django:has_all(Ids) end, ?WAIT_MS),
    %% First arrival of each id follows the order they were accepted in.
    ?assertEqual(Ids, first_arrivals(77)).

kill_9_node(Config) ->
    DataDir = filename:join(?config(priv_dir, Config), "kill9"),
    Port = msg_test_util:free_port(),
    persistent_term:put({msg_test_util, port}, Port),
    %% Django is down while we send, so everything is still pending in the WAL
    %% when the node dies.
    fake_django:set_mode(fail),
    Node1 = start_os_node(Port, DataDir),
    ok = wait_health(),
    Self = self(),
    Sender = spawn_link(fun() -> Self ! {acked, send_until_error(1, [])} end),
    timer:sleep(list_to_integer(os:getenv("KILL9_AFTER_MS", "1500"))),
    kill_os_node(Node1, "-9"),
    Acked = receive {acked, Ids} -> Ids after 30000 -> error(sender_timeout) end,
    unlink(Sender),
    ct:pal("~p messages acknowledged before kill -9", [length(Acked)]),
    ?assert(length(Acked) > 10),
    fake_django:set_mode(ok),
    Node2 = start_os_node(Port, DataDir),
    try
        ok = wait_health(),
        ok = msg_test_util:wait_until(fun() -> fake_django:has_all(Acked) end, ?WAIT_MS)
    after
        kill_os_node(Node2, "-TERM")
    end.

%%====================================================================
%% Helpers
%%====================================================================

send_many(Worker, N) ->
    lists:append([case msg_test_util:send_message(#{receiver_id => Worker * 1000 + I rem 7,
                                                    conversation_id => Worker}) of
                       {ok, Id} -> [Id];
                       {error, _} -> []
                   end || I <- lists:seq(1, N)]).

kill_loop(0) ->
    ok;
kill_loop(Rounds) ->
    timer:sleep(40),
    Victims = [message_queue_manager, message_persistence, message_router_1,
               message_router_2, message_wal],
    Name = lists:nth(rand:uniform(length(Victims)), Victims),
    case whereis(Name) of
        undefined -> ok;
        Pid -> exit(Pid, kill)
    end,
    kill_loop(Rounds - 1).

first_arrivals(Conv) ->
    {Order, _} = lists:foldl(fun({Id, C}, {Acc, Seen}) when C =:= Conv ->
                                     case sets:is_element(Id, Seen) of
                                         true -> {Acc, Seen};
                                         false -> {[Id | Acc], sets:add_element(Id, Seen)}
                                     end;
                                (_, Acc) -> Acc
                             end, {[], sets:new()}, fake_django:arrivals()),
    lists:reverse(Order).

%% Acknowledged ids until the node stops answering.
send_until_error(N, Acc) when N > 100000 ->
    Acc;
send_until_error(N, Acc) ->
    case msg_test_util:send_message(#{conversation_id => 5, text => integer_to_binary(N)}) of
        {ok, Id} -> send_until_error(N + 1, [Id | Acc]);
        {error, _} -> lists:reverse(Acc)
    end.

root_dir() ->
    %% .../_build/test/lib/messaging_service -> project root
    filename:absname(filename:join([code:lib_dir(messaging_service), "..", "..", "..", ".."])).

build_dir() ->
    filename:absname(filename:join([code:lib_dir(messaging_service), "..", ".."])).

start_os_node(Port, DataDir) ->
    Script = filename:join([root_dir(), "bin", "messaging-start"]),
    Env = [{"HTTP_PORT", integer_to_list(Port)}, {"MESSAGING_DATA_DIR", DataDir},
           {"DJANGO_API_URL", fake_django:url()}, {"MESSAGING_BUILD_DIR", build_dir()},
           {"PERSIST_FLUSH_INTERVAL_MS", "50"}, {"MESSAGING_SHARED_SECRET", "dev-messaging-secret"},
           %% The development secret: the script accepts it in development mode only.
           {"DEBUG", "true"},
           %% Other suites may have put settings into this VM's environment.
           {"MESSAGING_NODE_NAME", false}, {"MESSAGING_CLUSTER_NODES", false},
           {"MESSAGE_QUEUE_MAX_SIZE", false}, {"MAX_BODY_BYTES", false}, {"MAX_PENDING", false},
           {"PERSIST_BATCH_SIZE", false}],
    PortRef = open_port({spawn_executable, Script},
                        [{env, Env}, exit_status, stderr_to_stdout, binary]),
    {os_pid, OsPid} = erlang:port_info(PortRef, os_pid),
    {PortRef, OsPid}.

kill_os_node({PortRef, OsPid}, Signal) ->
    os:cmd("kill " ++ Signal ++ " " ++ integer_to_list(OsPid)),
    Output = collect_output(PortRef, []),
    ct:log("node ~p output:~n~s", [OsPid, Output]).

%% The node's stdout/stderr until it exits (logged for diagnosis).
collect_output(PortRef, Acc) ->
    receive
        {PortRef, {data, Data}} -> collect_output(PortRef, [Data | Acc]);
        {PortRef, {exit_status, _}} -> lists:reverse(Acc)
    after 15000 -> ct:fail({node_did_not_exit, PortRef})
    end.

wait_health() ->
    msg_test_util:wait_until(fun() ->
                                     {200, _} = msg_test_util:request(get, "/health", none, []),
                                     true
                             end, 20000).
