%% Two local nodes: the CT node runs the service as node A, a peer node runs
%% it as node B. A user connected by WebSocket to B receives a message POSTed
%% to A, because the messaging_pg group spans the cluster.
-module(cluster_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([sessions_are_visible_cluster_wide/1, message_posted_on_a_reaches_user_on_b/1,
         message_posted_on_b_reaches_user_on_a/1, session_cap_spans_the_cluster/1]).

-define(WAIT_MS, 10000).
-define(SECRET, "ws-suite-secret").
%% The default of ws_max_connections_per_user.
-define(SESSION_CAP, 10).

all() ->
    [sessions_are_visible_cluster_wide, message_posted_on_a_reaches_user_on_b,
     message_posted_on_b_reaches_user_on_a, session_cap_spans_the_cluster].

init_per_suite(Config) ->
    case ensure_distributed() of
        ok -> start_cluster(Config);
        %% Without distributed Erlang (no epmd) clustering cannot be checked: fail, never skip.
        {error, Reason} -> ct:fail({no_distribution, Reason})
    end.

end_per_suite(Config) ->
    catch peer:stop(?config(peer, Config)),
    _ = application:stop(messaging_service),
    ok.

%% rebar3 ct runs a non-distributed node unless given --sname; start
%% distribution here so the suite works either way.
ensure_distributed() ->
    case node() of
        nonode@nohost ->
            _ = os:cmd("epmd -daemon"),
            case net_kernel:start([list_to_atom("cluster_a_" ++ os:getpid()), shortnames]) of
                {ok, _} -> ok;
                {error, Reason} -> {error, Reason}
            end;
        _ ->
            ok
    end.

start_cluster(Config) ->
    Priv = ?config(priv_dir, Config),
    PortA = ws_SUITE:free_port(),
    ok = ws_SUITE:start_app(PortA, filename:join(Priv, "a")),
    PortB = ws_SUITE:free_port(),
    %% Not start_link: init_per_suite runs in a process that exits afterwards.
    {ok, Peer, NodeB} = peer:start(#{name => peer:random_name(cluster_b),
                                          args => ["-setcookie", atom_to_list(erlang:get_cookie())]}),
    ok = start_app_on(NodeB, PortB, filename:join(Priv, "b")),
    ok = ws_SUITE:wait_until(fun() -> lists:member(NodeB, nodes()) end, ?WAIT_MS),
    [{peer, Peer}, {node_b, NodeB}, {port_a, PortA}, {port_b, PortB} | Config].

%% Node B gets the build's code path and its own port and data dir; it is
%% told about node A the way bin/messaging-start would (MESSAGING_CLUSTER_NODES).
%% erpc rather than peer:call/4, which fails with noconnection on OTP 25 when
%% the peer is reached over distribution started at run time.
start_app_on(Node, Port, DataDir) ->
    ok = erpc:call(Node, code, add_pathsa, [code:get_path()]),
    Env = [{"HTTP_PORT", integer_to_list(Port)},
           {"MESSAGING_DATA_DIR", DataDir},
           {"MESSAGING_SHARED_SECRET", ?SECRET},
           {"MESSAGING_CLUSTER_NODES", atom_to_list(node())},
           {"DJANGO_API_URL", "http://127.0.0.1:" ++ integer_to_list(ws_SUITE:free_port())}],
    [true = erpc:call(Node, os, putenv, [K, V]) || {K, V} <- Env],
    {ok, _} = erpc:call(Node, application, ensure_all_started, [messaging_service], ?WAIT_MS),
    ok.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

sessions_are_visible_cluster_wide(Config) ->
    NodeB = ?config(node_b, Config),
    UserId = 9001,
    C = ws_SUITE:ws_connect(?config(port_b, Config), UserId),
    ok = ws_SUITE:wait_until(fun() -> session_nodes(UserId) =:= [NodeB] end, ?WAIT_MS),
    ws_close(C),
    ok = ws_SUITE:wait_until(fun() -> messaging_ws:sessions(UserId) =:= [] end, ?WAIT_MS).

message_posted_on_a_reaches_user_on_b(Config) ->
    deliver_across({local, ?config(port_a, Config)},
                   ?config(port_b, Config), ?config(node_b, Config), 9002).

message_posted_on_b_reaches_user_on_a(Config) ->
    deliver_across({?config(node_b, Config), ?config(port_b, Config)},
                   ?config(port_a, Config), node(), 9003).

%% Connect on the receiving node, wait until the sending node's pg sees the
%% session, then POST on the sending node and expect the frame.
deliver_across({SendVia, SendPort}, RecvPort, RecvNode, UserId) ->
    C = ws_SUITE:ws_connect(RecvPort, UserId),
    ok = ws_SUITE:wait_until(fun() -> session_nodes(SendVia, UserId) =:= [RecvNode] end,
                             ?WAIT_MS),
    Text = <<"across the cluster">>,
    {Status, Body} = ws_SUITE:post_message(SendPort, 9000, UserId, Text),
    ?assert(Status >= 200 andalso Status < 300, {Status, Body}),
    {text, Json} = ws_SUITE:ws_expect(C, text, ?WAIT_MS),
    #{<<"type">> := <<"message">>, <<"message">> := Msg} = jiffy:decode(Json, [return_maps]),
    ?assertMatch(#{<<"text">> := Text, <<"receiver_id">> := UserId}, Msg),
    ws_close(C).

%% Half the cap on each node, opened in turns without waiting for pg to
%% spread the news: one more is refused on either node.
session_cap_spans_the_cluster(Config) ->
    PortA = ?config(port_a, Config),
    PortB = ?config(port_b, Config),
    UserId = 9004,
    Open = lists:append([[ws_SUITE:ws_connect(PortA, UserId), ws_SUITE:ws_connect(PortB, UserId)]
                         || _ <- lists:seq(1, ?SESSION_CAP div 2)]),
    [begin
         C = ws_SUITE:ws_connect(Port, UserId),
         {close, <<1008:16, "too many connections">>} = ws_SUITE:ws_expect(C, close, ?WAIT_MS)
     end || Port <- [PortA, PortB]],
    ok = ws_SUITE:wait_until(fun() -> length(messaging_ws:sessions(UserId)) =:= ?SESSION_CAP end,
                             ?WAIT_MS),
    [ws_close(C) || C <- Open].

session_nodes(UserId) ->
    session_nodes(local, UserId).

%% Which nodes host UserId's sessions, as seen from the local node or node B.
session_nodes(local, UserId) ->
    [node(Pid) || Pid <- messaging_ws:sessions(UserId)];
session_nodes(Node, UserId) ->
    [node(Pid) || Pid <- erpc:call(Node, messaging_ws, sessions, [UserId])].

ws_close({Sock, _Ref}) ->
    gen_tcp:close(Sock).
