%% Top supervisor. Its init/1 creates every ETS table, so the supervisor
%% process owns them and queue/persistence state survives any worker crash.
%% Children start in dependency order: tables' users before the WAL replay
%% (which routes recovered messages), and the HTTP listener last so no
%% request arrives before recovery is done.
-module(messaging_service_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    ok = messaging_tables:create(),
    Flags = #{strategy => one_for_one,
              intensity => messaging_config:get(restart_intensity),
              period => messaging_config:get(restart_period)},
    {ok, {Flags, children()}}.

children() ->
    [#{id => pg, start => {pg, start_link, [messaging_pg]}},
     worker(stats_collector),
     worker(message_queue_manager),
     worker(message_persistence),
     #{id => message_router_sup, start => {message_router_sup, start_link, []},
       type => supervisor},
     worker(message_broadcast),
     worker(message_wal),
     worker(messaging_cluster),
     worker(messaging_http)].

worker(Module) ->
    #{id => Module, start => {Module, start_link, []}, shutdown => 5000}.
