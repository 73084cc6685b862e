%% Operations, end to end over loopback: /health (public and with the
%% secret), /metrics (every contract name, values that move, Prometheus' own
%% parser), request ids from the request to the persistence callback, JSON
%% log lines (an in-VM handler and a node started with LOG_FORMAT=json), and
%% rotating the shared secret without downtime.
-module(ops_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("kernel/include/logger.hrl").

-export([all/0, groups/0, init_per_group/2, end_per_group/2, init_per_testcase/2,
         end_per_testcase/2]).
-export([health_without_the_secret_is_the_status_only/1, health_with_the_secret_has_details/1,
         health_is_503_when_the_wal_cannot_be_written/1, metrics_need_the_secret/1,
         metrics_have_every_contract_name_and_move/1, metrics_pass_promtool/1,
         request_id_travels_to_the_persistence_callback/1,
         missing_or_unusable_request_id_is_replaced/1,
         batch_and_broadcast_messages_carry_the_request_id/1,
         websocket_clients_do_not_see_the_request_id/1,
         rotation_accepts_current_and_previous_secrets/1,
         rotation_callbacks_fall_back_to_the_previous_secret/1,
         rotation_websocket_tokens_of_either_secret_connect/1,
         json_log_lines_for_requests_crashes_and_supervisors/1,
         node_started_with_log_format_json_writes_json_lines/1]).

-compile({no_auto_import, [get/1]}).
-import(msg_test_util, [request/4, request_full/4, wait_until/2]).

-define(SECRET, "dev-messaging-secret").
-define(CURRENT, "rotation-secret-B").
-define(PREVIOUS, "rotation-secret-A").
-define(WAIT_MS, 15000).
-define(QUEUE_MAX, 3).

%% The names common.md lists: the alert rules use exactly these.
-define(METRIC_NAMES,
        [<<"messaging_messages_accepted_total">>, <<"messaging_messages_routed_total">>,
         <<"messaging_messages_delivered_total">>, <<"messaging_messages_dropped_total">>,
         <<"messaging_persistence_batches_total">>, <<"messaging_persistence_lag_seconds">>,
         <<"messaging_wal_bytes">>, <<"messaging_messages_dead_lettered_total">>,
         <<"messaging_websocket_connections">>, <<"messaging_vm_memory_bytes">>,
         <<"messaging_vm_processes">>, <<"messaging_cluster_members">>, <<"messaging_up">>]).

all() ->
    [{group, service}, {group, rotation}, {group, logs}].

groups() ->
    [{service, [sequence],
      [health_without_the_secret_is_the_status_only, health_with_the_secret_has_details,
       health_is_503_when_the_wal_cannot_be_written, metrics_need_the_secret,
       metrics_have_every_contract_name_and_move, metrics_pass_promtool,
       request_id_travels_to_the_persistence_callback, missing_or_unusable_request_id_is_replaced,
       batch_and_broadcast_messages_carry_the_request_id,
       websocket_clients_do_not_see_the_request_id]},
     {rotation, [sequence],
      [rotation_accepts_current_and_previous_secrets,
       rotation_callbacks_fall_back_to_the_previous_secret,
       rotation_websocket_tokens_of_either_secret_connect]},
     {logs, [sequence],
      [json_log_lines_for_requests_crashes_and_supervisors,
       node_started_with_log_format_json_writes_json_lines]}].

init_per_group(rotation, Config) ->
    msg_test_util:start_service(Config, [{shared_secret, <<?CURRENT>>},
                                         {shared_secret_previous, <<?PREVIOUS>>}]),
    Config;
init_per_group(_Group, Config) ->
    msg_test_util:start_service(Config, [{message_queue_max_size, ?QUEUE_MAX}]),
    Config.

end_per_group(_Group, _Config) ->
    msg_test_util:stop_service().

init_per_testcase(_Case, Config) ->
    fake_django:reset(),
    Config.

end_per_testcase(_Case, _Config) ->
    fake_django:set_mode(ok).

%%====================================================================
%% /health
%%====================================================================

health_without_the_secret_is_the_status_only(_Config) ->
    ?assertEqual({200, #{<<"status">> => <<"ok">>}}, request(get, "/health", none, [])),
    ?assertEqual({200, #{<<"status">> => <<"ok">>}},
                 request(get, "/health", none, [{"x-messaging-token", "wrong"}])),
    {200, Headers, <<>>} = request_full(head, "/health", none, []),
    ?assertMatch("application/json" ++ _, proplists:get_value("content-type", Headers)).

health_with_the_secret_has_details(_Config) ->
    {ok, Id} = msg_test_util:send_message(#{}),
    ok = wait_until(fun() -> fake_django:has_all([Id]) end, ?WAIT_MS),
    ok = wait_until(fun() -> pending() =:= 0 end, ?WAIT_MS),
    {200, Body} = request(get, "/health", none, token_header(?SECRET)),
    ?assertMatch(#{<<"status">> := <<"ok">>, <<"node">> := _, <<"uptime_seconds">> := _,
                   <<"wal">> := #{<<"writable">> := true, <<"process_alive">> := true,
                                  <<"dir_writable">> := true, <<"bytes">> := _},
                   <<"django">> := #{<<"reachable">> := true,
                                     <<"last_callback">> := #{<<"outcome">> := <<"ok">>,
                                                              <<"http_status">> := 200,
                                                              <<"seconds_ago">> := _}},
                   <<"persistence">> := #{<<"pending">> := 0, <<"lag_seconds">> := _},
                   <<"cluster">> := #{<<"members">> := [_ | _]}}, Body),
    ?assert(lists:member(atom_to_binary(node()),
                         maps:get(<<"members">>, maps:get(<<"cluster">>, Body)))),
    %% Prometheus-style Bearer works as well.
    {200, ByBearer} = request(get, "/health", none, bearer(?SECRET)),
    ?assertEqual(lists:sort(maps:keys(Body)), lists:sort(maps:keys(ByBearer))),
    %% Never a secret or a stack trace.
    ?assertEqual(nomatch, binary:match(jiffy:encode(Body), <<?SECRET>>)).

%% The node cannot make a message durable, so it says so with a 503; once the
%% directory is back, it is ok again.
health_is_503_when_the_wal_cannot_be_written(_Config) ->
    Dir = messaging_config:get(data_dir),
    Moved = Dir ++ ".moved",
    ok = file:rename(Dir, Moved),
    ok = file:write_file(Dir, <<"not a directory">>),
    try
        ?assertEqual({503, #{<<"status">> => <<"unavailable">>}}, request(get, "/health", none, [])),
        {503, Details} = request(get, "/health", none, token_header(?SECRET)),
        ?assertMatch(#{<<"status">> := <<"unavailable">>,
                       <<"wal">> := #{<<"writable">> := false, <<"dir_writable">> := false,
                                      <<"process_alive">> := true}}, Details)
    after
        ok = file:delete(Dir),
        ok = file:rename(Moved, Dir)
    end,
    ?assertEqual({200, #{<<"status">> => <<"ok">>}}, request(get, "/health", none, [])).

%%====================================================================
%% /metrics
%%====================================================================

metrics_need_the_secret(_Config) ->
    [?assertMatch({401, #{<<"error">> := #{<<"code">> := <<"unauthorized">>}}},
                  request(get, "/metrics", none, Headers))
     || Headers <- [[], token_header("wrong"), bearer("wrong"),
                    [{"authorization", "Basic " ++ base64:encode_to_string(?SECRET)}]]],
    [begin
         {200, RespHeaders, _} = request_full(get, "/metrics", none, Headers),
         ?assertEqual("text/plain; version=0.0.4; charset=utf-8",
                      proplists:get_value("content-type", RespHeaders))
     end || Headers <- [token_header(?SECRET), bearer(?SECRET)]].

metrics_have_every_contract_name_and_move(_Config) ->
    Before = scrape(),
    [?assert(has_family(Name, Before)) || Name <- ?METRIC_NAMES],
    ?assertEqual(1, value(<<"messaging_up">>, [], Before)),
    ?assertEqual(length(nodes()) + 1, value(<<"messaging_cluster_members">>, [], Before)),
    ?assert(value(<<"messaging_vm_memory_bytes">>, [{<<"kind">>, <<"total">>}], Before) > 0),
    ?assert(value(<<"messaging_vm_processes">>, [], Before) > 0),
    ?assert(value(<<"messaging_wal_bytes">>, [], Before) > 0),
    ?assert(is_number(value(<<"messaging_websocket_connections">>, [], Before))),

    %% A message in, fetched and acknowledged, persisted: each counter moves.
    {ok, Id} = msg_test_util:send_message(#{receiver_id => 4001, priority => <<"high">>}),
    {200, #{<<"acknowledged">> := 1}} = msg_test_util:post("/queues/4001/ack", #{ids => [Id]}),
    ok = wait_until(fun() -> fake_django:has_all([Id]) end, ?WAIT_MS),
    High = [{<<"priority">>, <<"high">>}],
    ok = wait_until(fun() ->
                            After = scrape(),
                            moved(<<"messaging_messages_accepted_total">>, High, 1, Before, After)
                                andalso moved(<<"messaging_messages_routed_total">>, High, 1, Before, After)
                                andalso moved(<<"messaging_messages_delivered_total">>, High, 1, Before, After)
                                andalso grew(<<"messaging_persistence_batches_total">>,
                                             [{<<"outcome">>, <<"ok">>}], Before, After)
                    end, ?WAIT_MS),

    %% A full queue drops its oldest message.
    [{ok, _} = msg_test_util:send_message(#{receiver_id => 4002, priority => <<"low">>})
     || _ <- lists:seq(1, ?QUEUE_MAX + 1)],
    ?assert(moved(<<"messaging_messages_dropped_total">>, [{<<"priority">>, <<"low">>}], 1,
                  Before, scrape())),

    %% Django down: failed batches, and the oldest unconfirmed message ages.
    fake_django:set_mode(fail),
    {ok, Late} = msg_test_util:send_message(#{}),
    ok = wait_until(fun() ->
                            Now = scrape(),
                            grew(<<"messaging_persistence_batches_total">>,
                                 [{<<"outcome">>, <<"failed">>}], Before, Now)
                                andalso value(<<"messaging_persistence_lag_seconds">>, [], Now) >= 1
                    end, ?WAIT_MS),
    fake_django:set_mode(ok),
    ok = wait_until(fun() -> fake_django:has_all([Late]) end, ?WAIT_MS),
    ok = wait_until(fun() -> value(<<"messaging_persistence_lag_seconds">>, [], scrape()) == 0 end,
                    ?WAIT_MS),

    %% Django refuses a message: it is dead-lettered, once.
    fake_django:set_mode(reject),
    {ok, _Refused} = msg_test_util:send_message(#{}),
    ok = wait_until(fun() -> moved(<<"messaging_messages_dead_lettered_total">>, [], 1, Before,
                                   scrape())
                    end, ?WAIT_MS).

%% Prometheus' own parser and linter (promtool, Debian's prometheus package)
%% must find nothing to say about the exposition: lint warnings count too.
metrics_pass_promtool(Config) ->
    {ok, _} = msg_test_util:send_message(#{}),
    {200, _, Body} = request_full(get, "/metrics", none, token_header(?SECRET)),
    File = filename:join(?config(priv_dir, Config), "metrics.txt"),
    ok = file:write_file(File, Body),
    {Status, Output} = run("promtool check metrics < " ++ File),
    ct:log("promtool exit ~p:~n~s", [Status, Output]),
    ?assertEqual({0, ""}, {Status, Output}).

%%====================================================================
%% Request ids
%%====================================================================

request_id_travels_to_the_persistence_callback(_Config) ->
    {202, Headers, #{<<"id">> := Id}} =
        request_full(post, "/messages", new_message(), [{"x-request-id", "ops-trace-1"} | token_header(?SECRET)]),
    ?assertEqual("ops-trace-1", proplists:get_value("x-request-id", Headers)),
    ok = wait_until(fun() -> fake_django:has_all([Id]) end, ?WAIT_MS),
    ?assertMatch(#{<<"request_id">> := <<"ops-trace-1">>}, fake_django:message(Id)),
    %% The callback has an id of its own, a fresh one.
    [CallbackId | _] = [R || #{path := "/api/messaging/erlang/persist/", request_id := R,
                               status := 200} <- fake_django:posts()],
    ?assertMatch({match, _}, re:run(CallbackId, "^[0-9a-f]{32}$")).

missing_or_unusable_request_id_is_replaced(_Config) ->
    Cases = [[], [{"x-request-id", "has spaces in it"}],
             [{"x-request-id", lists:duplicate(65, $a)}], [{"x-request-id", "semi;colon"}]],
    Ids = [begin
               {202, Headers, #{<<"id">> := Id}} =
                   request_full(post, "/messages", new_message(), Extra ++ token_header(?SECRET)),
               Given = proplists:get_value("x-request-id", Headers),
               ?assertMatch({match, _}, re:run(Given, "^[0-9a-f]{32}$")),
               {Id, list_to_binary(Given)}
           end || Extra <- Cases],
    ok = wait_until(fun() -> fake_django:has_all([Id || {Id, _} <- Ids]) end, ?WAIT_MS),
    [?assertMatch(#{<<"request_id">> := Given}, fake_django:message(Id)) || {Id, Given} <- Ids],
    %% Every answer has one, errors included.
    {401, ErrHeaders, _} = request_full(get, "/stats", none, [{"x-request-id", "denied-1"}]),
    ?assertEqual("denied-1", proplists:get_value("x-request-id", ErrHeaders)).

batch_and_broadcast_messages_carry_the_request_id(_Config) ->
    Batch = #{messages => [new_message(), new_message()]},
    {202, _, #{<<"results">> := Results}} =
        request_full(post, "/messages/batch", Batch, [{"x-request-id", "batch-7"} | token_header(?SECRET)]),
    BatchIds = [Id || #{<<"id">> := Id} <- Results],
    Users = lists:seq(5001, 5005),
    {202, _, #{<<"broadcast_id">> := Bid}} =
        request_full(post, "/broadcast", #{sender_id => 1, user_ids => Users, text => <<"news">>},
                     [{"x-request-id", "broadcast-9"} | token_header(?SECRET)]),
    Derived = [message_ids:derived_uuid(Bid, U) || U <- Users],
    ok = wait_until(fun() -> fake_django:has_all(BatchIds ++ Derived) end, ?WAIT_MS),
    [?assertMatch(#{<<"request_id">> := <<"batch-7">>}, fake_django:message(Id)) || Id <- BatchIds],
    [?assertMatch(#{<<"request_id">> := <<"broadcast-9">>, <<"broadcast_id">> := Bid},
                  fake_django:message(Id)) || Id <- Derived].

%% The id is for tracing between Django and this service; the browser gets
%% the message without it.
websocket_clients_do_not_see_the_request_id(_Config) ->
    UserId = 5101,
    Conn = ws_SUITE:ws_connect(port(), UserId, ws_token:sign(UserId, in_five_minutes(), <<?SECRET>>)),
    ok = wait_until(fun() -> messaging_ws:sessions(UserId) =/= [] end, ?WAIT_MS),
    {202, _, #{<<"id">> := Id}} =
        request_full(post, "/messages", new_message(UserId),
                     [{"x-request-id", "ws-trace"} | token_header(?SECRET)]),
    {text, Json} = ws_SUITE:ws_expect(Conn, text),
    #{<<"type">> := <<"message">>, <<"message">> := Msg} = jiffy:decode(Json, [return_maps]),
    ?assertMatch(#{<<"id">> := Id}, Msg),
    ?assertNot(maps:is_key(<<"request_id">>, Msg)),
    gen_tcp:close(element(1, Conn)).

%%====================================================================
%% Secret rotation: this node has current = B and previous = A
%%====================================================================

rotation_accepts_current_and_previous_secrets(_Config) ->
    [?assertMatch({200, _}, request(get, "/stats", none, Headers))
     || Headers <- [token_header(?CURRENT), token_header(?PREVIOUS), bearer(?CURRENT),
                    bearer(?PREVIOUS)]],
    [?assertMatch({401, _}, request(get, "/stats", none, Headers))
     || Headers <- [token_header("rotation-secret-C"), bearer("rotation-secret-C"),
                    token_header(""), []]],
    {200, Details} = request(get, "/health", none, token_header(?PREVIOUS)),
    ?assert(maps:is_key(<<"wal">>, Details)),
    ?assertEqual({200, #{<<"status">> => <<"ok">>}},
                 request(get, "/health", none, token_header("rotation-secret-C"))).

%% Django still runs with the old secret A: each callback is refused with B,
%% then sent again at once with A. Once Django has B, B alone is used.
rotation_callbacks_fall_back_to_the_previous_secret(_Config) ->
    fake_django:set_secrets([?PREVIOUS]),
    {ok, Id} = send_with(?CURRENT),
    ok = wait_until(fun() -> fake_django:has_all([Id]) end, ?WAIT_MS),
    Persists = [P || P = #{path := "/api/messaging/erlang/persist/"} <- fake_django:posts()],
    ?assertMatch([#{token := ?CURRENT, status := 401}, #{token := ?PREVIOUS, status := 200} | _],
                 Persists),
    %% The same callback, tried twice: the same request id.
    [#{request_id := R1}, #{request_id := R2} | _] = Persists,
    ?assertEqual(R1, R2),

    fake_django:reset(),
    fake_django:set_secrets([?CURRENT]),
    {ok, Id2} = send_with(?PREVIOUS),
    ok = wait_until(fun() -> fake_django:has_all([Id2]) end, ?WAIT_MS),
    ?assertEqual([?CURRENT],
                 lists:usort([T || #{path := "/api/messaging/erlang/persist/", token := T}
                                       <- fake_django:posts()])).

rotation_websocket_tokens_of_either_secret_connect(_Config) ->
    Expires = in_five_minutes(),
    [begin
         Conn = ws_SUITE:ws_connect(port(), 6001, ws_token:sign(6001, Expires, Secret)),
         gen_tcp:close(element(1, Conn))
     end || Secret <- [<<?CURRENT>>, <<?PREVIOUS>>]],
    Forged = binary_to_list(ws_token:sign(6001, Expires, <<"rotation-secret-C">>)),
    ?assertMatch({401, _}, request(get, "/ws?token=" ++ Forged, none, [])).

%%====================================================================
%% JSON logs
%%====================================================================

%% The formatter on a file handler in this VM: a request's line, a crash
%% report and a supervisor report each come out as one JSON object per line,
%% and the shared secret is nowhere.
json_log_lines_for_requests_crashes_and_supervisors(Config) ->
    File = filename:join(?config(priv_dir, Config), "json.log"),
    ok = logger:add_handler(ops_json, logger_std_h,
                            #{config => #{file => File}, level => all,
                              formatter => {messaging_log_formatter, #{format => json}}}),
    %% Request lines are at info; nothing else in this VM needs to change level.
    ok = logger:set_module_level(messaging_http, info),
    try
        {202, _, #{<<"id">> := Id}} =
            request_full(post, "/messages", new_message(),
                         [{"x-request-id", "log-trace-1"} | token_header(?SECRET)]),
        _ = proc_lib:spawn(fun() -> error({boom, <<255, 0>>, self(), make_ref()}) end),
        exit(whereis(message_broadcast), kill),
        ?LOG_WARNING("secret check ~s", [?SECRET], #{odd => {<<200>>, self()}}),
        ok = wait_until(fun() -> is_pid(whereis(message_broadcast)) end, ?WAIT_MS),
        ok = wait_until(fun() ->
                                logger_std_h:filesync(ops_json),
                                length(json_lines(File)) >= 4 andalso
                                    [] =/= supervisor_lines(json_lines(File))
                        end, ?WAIT_MS),
        {ok, Raw} = file:read_file(File),
        ?assertEqual(nomatch, binary:match(Raw, <<?SECRET>>)),
        Lines = json_lines(File),
        [?assertMatch(#{<<"time">> := _, <<"level">> := _, <<"logger">> := _,
                        <<"message">> := _, <<"node">> := _}, L) || L <- Lines],
        [Request] = [L || L = #{<<"request_id">> := <<"log-trace-1">>, <<"status">> := 202} <- Lines],
        ?assertMatch(#{<<"level">> := <<"info">>, <<"logger">> := <<"messaging_http">>,
                       <<"method">> := <<"POST">>, <<"path">> := <<"/messages">>,
                       <<"message_ids">> := [Id]}, Request),
        ?assertMatch([_ | _], [L || L = #{<<"domain">> := <<"otp.sasl">>, <<"message">> := M} <- Lines,
                                    binary:match(M, <<"boom">>) =/= nomatch]),
        ?assertMatch([_ | _], supervisor_lines(Lines))
    after
        logger:unset_module_level(messaging_http),
        logger:remove_handler(ops_json)
    end.

%% bin/messaging-start with LOG_FORMAT=json LOG_LEVEL=info: what the node
%% writes on stdout (start-up and its progress reports, request lines,
%% shutdown) is JSON, one object per line, and never shows the secret.
node_started_with_log_format_json_writes_json_lines(Config) ->
    Port = msg_test_util:free_port(),
    Secret = "json-node-secret-42",
    Node = start_os_node(Port, filename:join(?config(priv_dir, Config), "json_node"),
                         [{"LOG_FORMAT", "json"}, {"LOG_LEVEL", "info"},
                          {"MESSAGING_SHARED_SECRET", Secret}]),
    Output = try
                 ok = wait_until(fun() -> node_health(Port) end, 20000),
                 {ok, {{_, 202, _}, _, _}} =
                     httpc:request(post, {"http://127.0.0.1:" ++ integer_to_list(Port) ++ "/messages",
                                          [{"x-messaging-token", Secret}, {"x-request-id", "node-trace-1"}],
                                          "application/json", jiffy:encode(new_message())}, [], []),
                 stop_os_node(Node, "-TERM")
             catch Class:Reason:Stack ->
                 ct:log("node output:~n~s", [stop_os_node(Node, "-KILL")]),
                 erlang:raise(Class, Reason, Stack)
             end,
    ct:log("node output:~n~s", [Output]),
    ?assertEqual(nomatch, binary:match(Output, list_to_binary(Secret))),
    Lines = [jiffy:decode(L, [return_maps]) || L <- binary:split(Output, <<"\n">>, [global, trim_all])],
    ?assertMatch([_, _ | _], Lines),
    ?assertMatch([_], [L || L = #{<<"request_id">> := <<"node-trace-1">>, <<"level">> := <<"info">>,
                               <<"status">> := 202} <- Lines]),
    ?assertMatch([_ | _], [L || L = #{<<"logger">> := <<"messaging_service_app">>} <- Lines]).

%%====================================================================
%% Helpers
%%====================================================================

token_header(Secret) -> [{"x-messaging-token", Secret}].

bearer(Secret) -> [{"authorization", "Bearer " ++ Secret}].

port() ->
    list_to_integer(lists:last(string:split(msg_test_util:app_url(), ":", trailing))).

in_five_minutes() ->
    erlang:system_time(second) + 300.

new_message() ->
    new_message(2).

new_message(Receiver) ->
    #{sender_id => 1, receiver_id => Receiver, text => <<"ops">>}.

send_with(Secret) ->
    case request(post, "/messages", new_message(), token_header(Secret)) of
        {202, #{<<"id">> := Id}} -> {ok, Id};
        Other -> {error, Other}
    end.

pending() ->
    {200, #{<<"pending_persistence">> := P}} = request(get, "/stats", none, token_header(?SECRET)),
    P.

%% The exposition as #{{Name, SortedLabels} => Value}, plus the families
%% that have # TYPE lines.
scrape() ->
    {200, _, Body} = request_full(get, "/metrics", none, bearer(?SECRET)),
    lists:foldl(fun parse_line/2, #{}, binary:split(Body, <<"\n">>, [global, trim_all])).

parse_line(<<"# TYPE ", Rest/binary>>, Acc) ->
    [Name, _Type] = binary:split(Rest, <<" ">>),
    Acc#{{family, Name} => true};
parse_line(<<"#", _/binary>>, Acc) ->
    Acc;
parse_line(Line, Acc) ->
    {match, [Name, Labels, Value]} =
        re:run(Line, "^([a-z_]+)(?:\\{(.*)\\})? (\\S+)$", [{capture, all_but_first, binary}]),
    LabelPairs = [list_to_tuple(binary:split(binary:replace(P, <<"\"">>, <<>>, [global]), <<"=">>))
                  || P <- binary:split(Labels, <<",">>, [global, trim_all])],
    Acc#{{Name, lists:sort(LabelPairs)} => number(Value)}.

number(Bin) ->
    try binary_to_integer(Bin)
    catch error:badarg -> binary_to_float(Bin)
    end.

has_family(Name, Scrape) -> maps:is_key({family, Name}, Scrape).

value(Name, Labels, Scrape) -> maps:get({Name, lists:sort(Labels)}, Scrape).

moved(Name, Labels, By, Before, After) ->
    value(Name, Labels, After) - value(Name, Labels, Before) >= By.

grew(Name, Labels, Before, After) ->
    moved(Name, Labels, 1, Before, After).

run(Command) ->
    Port = open_port({spawn, "sh -c '" ++ Command ++ "' 2>&1"}, [exit_status, binary]),
    collect(Port, []).

collect(Port, Acc) ->
    receive
        {Port, {data, Data}} -> collect(Port, [Data | Acc]);
        {Port, {exit_status, Status}} -> {Status, binary_to_list(iolist_to_binary(lists:reverse(Acc)))}
    after 30000 -> ct:fail(promtool_timeout)
    end.

json_lines(File) ->
    case file:read_file(File) of
        {ok, Bin} -> [jiffy:decode(L, [return_maps]) || L <- binary:split(Bin, <<"\n">>, [global, trim_all])];
        {error, enoent} -> []
    end.

supervisor_lines(Lines) ->
    [L || L = #{<<"logger">> := <<"supervisor">>, <<"level">> := <<"error">>, <<"message">> := M} <- Lines,
          binary:match(M, <<"message_broadcast">>) =/= nomatch].

%% The node from the source tree, as fault_SUITE starts it, with its output
%% (stdout and stderr) collected by this process.
start_os_node(Port, DataDir, Extra) ->
    Root = filename:absname(filename:join([code:lib_dir(messaging_service), "..", "..", "..", ".."])),
    Build = filename:absname(filename:join([code:lib_dir(messaging_service), "..", ".."])),
    Env = [{"HTTP_PORT", integer_to_list(Port)}, {"MESSAGING_DATA_DIR", DataDir},
           {"DJANGO_API_URL", fake_django:url()}, {"MESSAGING_BUILD_DIR", Build},
           {"DEBUG", "true"}, {"MESSAGING_SHARED_SECRET_PREVIOUS", false},
           {"MESSAGING_NODE_NAME", false}, {"MESSAGING_CLUSTER_NODES", false},
           {"MESSAGE_QUEUE_MAX_SIZE", false}, {"MAX_BODY_BYTES", false}, {"MAX_PENDING", false},
           {"PERSIST_BATCH_SIZE", false}] ++ Extra,
    PortRef = open_port({spawn_executable, filename:join([Root, "bin", "messaging-start"])},
                        [{env, Env}, exit_status, stderr_to_stdout, binary]),
    {os_pid, OsPid} = erlang:port_info(PortRef, os_pid),
    {PortRef, OsPid}.

stop_os_node({PortRef, OsPid}, Signal) ->
    os:cmd("kill " ++ Signal ++ " " ++ integer_to_list(OsPid)),
    node_output(PortRef, []).

node_output(PortRef, Acc) ->
    receive
        {PortRef, {data, Data}} -> node_output(PortRef, [Data | Acc]);
        {PortRef, {exit_status, _}} -> iolist_to_binary(lists:reverse(Acc))
    after 15000 -> ct:fail({node_did_not_exit, PortRef})
    end.

node_health(Port) ->
    {ok, {{_, 200, _}, _, _}} = httpc:request("http://127.0.0.1:" ++ integer_to_list(Port) ++ "/health"),
    true.
