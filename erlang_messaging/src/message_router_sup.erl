%% Supervises one router shard per scheduler. A crashed shard is restarted on
%% its own; the others keep routing.
-module(message_router_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Count = message_router:shard_count(),
    Shards = [#{id => {message_router, I}, start => {message_router, start_link, [I]}}
              || I <- lists:seq(1, Count)],
    {ok, {#{strategy => one_for_one,
            intensity => messaging_config:get(restart_intensity),
            period => messaging_config:get(restart_period)}, Shards}}.
