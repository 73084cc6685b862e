%% Service metrics. Hot-path counts go straight into a lock-free `counters`
%% array (created with the ETS tables, so it survives this process); the
%% process only samples the routed counts once a second to compute rates
%% over 1 s and 60 s windows, and assembles the GET /stats document.
%%
%% The rates ("messages per second") count routed messages: every message put
%% in a receiver's queue, whether it came from POST /messages or from a
%% broadcast's fan-out. Accepted counts only what a request wrote to the WAL,
%% and a broadcast is one WAL entry however many it reaches, so a rate over
%% accepted stayed at 0 while a broadcast filled the queues.
%% messaging_metrics reads the same counters for GET /metrics.
-module(stats_collector).
-behaviour(gen_server).

-export([start_link/0, count/3, get/2, persistence_failure/1, ws_connected/0,
         ws_disconnected/0, ws_connections/0,
         persistence_batch/1, persistence_batches/1, dead_lettered/1, dead_lettered/0,
         snapshot/0, uptime_seconds/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(METRICS, [accepted, routed, delivered, dropped, persisted]).
-define(PERSISTENCE_FAILURES, 16).
-define(WS_CONNECTIONS, 17).
%% Persistence callbacks Django answered 2xx / that failed (any other answer,
%% a transport error), and messages Django rejected (dead-lettered there).
-define(BATCHES_OK, 18).
-define(BATCHES_FAILED, 19).
-define(DEAD_LETTERED, 20).
-define(SAMPLE_MS, 1000).
-define(WINDOW_S, 60).

%%====================================================================
%% Counting (called from any process)
%%====================================================================

-spec count(accepted | routed | delivered | dropped | persisted,
            binary() | atom(), non_neg_integer()) -> ok.
count(_Metric, _Prio, 0) ->
    ok;
count(Metric, Prio, N) ->
    counters:add(messaging_tables:counters(), slot(Metric, Prio), N).

-spec get(atom(), binary() | atom()) -> non_neg_integer().
get(Metric, Prio) ->
    counters:get(messaging_tables:counters(), slot(Metric, Prio)).

persistence_failure(N) -> counters:add(messaging_tables:counters(), ?PERSISTENCE_FAILURES, N).

%% Called by message_persistence once per callback, with its outcome.
-spec persistence_batch(ok | failed) -> ok.
persistence_batch(Outcome) -> counters:add(messaging_tables:counters(), batch_slot(Outcome), 1).

-spec persistence_batches(ok | failed) -> non_neg_integer().
persistence_batches(Outcome) -> counters:get(messaging_tables:counters(), batch_slot(Outcome)).

batch_slot(ok) -> ?BATCHES_OK;
batch_slot(failed) -> ?BATCHES_FAILED.

-spec dead_lettered(non_neg_integer()) -> ok.
dead_lettered(N) -> counters:add(messaging_tables:counters(), ?DEAD_LETTERED, N).

-spec dead_lettered() -> non_neg_integer().
dead_lettered() -> counters:get(messaging_tables:counters(), ?DEAD_LETTERED).

%% Called by messaging_ws for each WebSocket session opened / closed.
ws_connected() -> counters:add(messaging_tables:counters(), ?WS_CONNECTIONS, 1).
ws_disconnected() -> counters:sub(messaging_tables:counters(), ?WS_CONNECTIONS, 1).
ws_connections() -> max(0, counters:get(messaging_tables:counters(), ?WS_CONNECTIONS)).

uptime_seconds() ->
    [{_, Started}] = ets:lookup(messaging_state, started_at),
    (erlang:monotonic_time(millisecond) - Started) div 1000.

slot(Metric, Prio) ->
    metric_index(Metric) * 3 + prio_index(Prio).

metric_index(accepted) -> 0;
metric_index(routed) -> 1;
metric_index(delivered) -> 2;
metric_index(dropped) -> 3;
metric_index(persisted) -> 4.

prio_index(high) -> 1;
prio_index(normal) -> 2;
prio_index(low) -> 3;
prio_index(<<"high">>) -> 1;
prio_index(<<"low">>) -> 3;
prio_index(_) -> 2.

%%====================================================================
%% GET /stats
%%====================================================================

%% @doc The /stats document (atom keys; jiffy encodes them as strings).
-spec snapshot() -> map().
snapshot() ->
    Websocket = ws_connections(),
    #{node => atom_to_binary(node()),
      uptime_seconds => uptime_seconds(),
      accepted => per_priority(accepted),
      routed => per_priority(routed),
      delivered => per_priority(delivered),
      dropped => per_priority(dropped),
      persisted => per_priority(persisted),
      rates => rates(),
      queue_depth => message_queue_manager:depth_stats(),
      pending_persistence => message_persistence:pending_count(),
      wal_unconfirmed => wal_unconfirmed(),
      persistence_failures => counters:get(messaging_tables:counters(), ?PERSISTENCE_FAILURES),
      connections => #{http => max(0, http_sockets() - Websocket), websocket => Websocket},
      memory_bytes => erlang:memory(total),
      process_count => erlang:system_info(process_count),
      broadcasts => message_broadcast:list(),
      cluster_nodes => [atom_to_binary(N) || N <- nodes()]}.

%% Messages the write-ahead log still holds because Django has not settled
%% them (stored, duplicate or rejected). A number that never falls means a
%% message is pinned.
wal_unconfirmed() ->
    try message_wal:unconfirmed_count()
    catch exit:_ -> null
    end.

per_priority(Metric) ->
    maps:from_list([{P, get(Metric, P)} || P <- [high, normal, low]]).

%% WebSocket sessions are mochiweb sockets too; they are subtracted above.
http_sockets() ->
    try mochiweb_socket_server:get(messaging_http, active_sockets)
    catch _:_ -> 0
    end.

rates() ->
    try gen_server:call(?MODULE, rates, 1000)
    catch exit:_ -> zero_rates()
    end.

zero_rates() ->
    Zero = #{high => 0.0, normal => 0.0, low => 0.0},
    #{'1s' => Zero, '60s' => Zero}.

%%====================================================================
%% Rate sampler
%%====================================================================

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% State: samples, newest first: [{MonotonicMs, #{high => N, ...}}]
init([]) ->
    erlang:send_after(?SAMPLE_MS, self(), sample),
    {ok, #{samples => [sample()]}}.

handle_call(rates, _From, State = #{samples := Samples}) ->
    {reply, compute_rates([sample() | Samples]), State};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(sample, State = #{samples := Samples}) ->
    erlang:send_after(?SAMPLE_MS, self(), sample),
    {noreply, State#{samples := lists:sublist([sample() | Samples], ?WINDOW_S + 1)}};
handle_info(_Other, State) ->
    {noreply, State}.

sample() ->
    {erlang:monotonic_time(millisecond), per_priority(routed)}.

%% "1s" compares now with the sample about a second ago; "60s" with the oldest
%% kept sample (up to 60 s ago).
compute_rates([Now | Older]) ->
    OneAgo = case Older of [S | _] -> S; [] -> Now end,
    Oldest = case Older of [] -> Now; _ -> lists:last(Older) end,
    #{'1s' => rate(Now, OneAgo), '60s' => rate(Now, Oldest)}.

rate({T1, C1}, {T0, C0}) ->
    Seconds = max(T1 - T0, 1) / 1000,
    maps:map(fun(P, N) -> round2((N - maps:get(P, C0)) / Seconds) end, C1).

round2(F) -> round(F * 100) / 100.
