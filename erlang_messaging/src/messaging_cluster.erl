%% Keeps this node connected to the peers listed in MESSAGING_CLUSTER_NODES
%% (comma separated node names). Connection attempts repeat every few
%% seconds, so peers may start in any order or restart at any time.
-module(messaging_cluster).
-behaviour(gen_server).

-export([start_link/0, peers/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(RETRY_MS, 3000).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc The configured peers (excluding this node).
-spec peers() -> [node()].
peers() ->
    [N || N <- messaging_config:get(cluster_nodes), N =/= node()].

init([]) ->
    self() ! connect,
    {ok, #{}}.

handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(connect, State) ->
    connect_missing(),
    erlang:send_after(?RETRY_MS, self(), connect),
    {noreply, State};
handle_info(_Other, State) ->
    {noreply, State}.

%% Only a distributed node can connect; otherwise there is nothing to do.
connect_missing() ->
    case node() of
        nonode@nohost -> ok;
        _ -> [net_kernel:connect_node(P) || P <- peers(), not lists:member(P, nodes())], ok
    end.
