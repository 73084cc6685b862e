%% The shared ETS tables and counters. Created from the supervisor's init/1 so
%% the supervisor owns them: a crashed worker is restarted onto intact state.
-module(messaging_tables).

-export([create/0, counters/0]).

%% Queue items, ordered so a user's messages are contiguous and oldest first:
%% {{UserId, Seq}, Msg}
-define(QUEUE_ITEMS, messaging_queue_items).
%% Per-user bookkeeping: {UserId, NextSeq, Count, Dropped}
-define(QUEUE_META, messaging_queue_meta).

-define(COUNTERS_KEY, {?MODULE, counters}).
-define(COUNTER_SLOTS, 32).

create() ->
    Concurrent = [public, named_table, {read_concurrency, true}, {write_concurrency, true}],
    new(?QUEUE_ITEMS, [ordered_set | Concurrent]),
    new(?QUEUE_META, [set | Concurrent]),
    %% Ids accepted recently: {Id, AcceptedAtMs}; makes client retries idempotent.
    new(messaging_known_ids, [set | Concurrent]),
    %% Messages not yet confirmed by Django, in acceptance order: {Seq, Msg}
    %% Its size is read on every request (overload check, persistence poke):
    %% decentralized counters would make ets:info(size) sum every scheduler's
    %% counter each time (tens of microseconds).
    new(messaging_persist_pending, [ordered_set, {decentralized_counters, false} | Concurrent]),
    %% Broadcast progress: {Id, Delivered, Total, Status, ReportedStatus}
    new(messaging_broadcasts, [set | Concurrent]),
    %% Small flags (e.g. whether the WAL was already replayed in this VM).
    new(messaging_state, [set | Concurrent]),
    ets:insert_new(messaging_state, {started_at, erlang:monotonic_time(millisecond)}),
    ensure_counters(),
    ok.

%% Tables normally die with the supervisor; if an old one is still there
%% (a test restarting the app in the same VM) it is reused, not recreated.
new(Name, Opts) ->
    case ets:whereis(Name) of
        undefined -> ets:new(Name, Opts);
        _ -> Name
    end.

ensure_counters() ->
    case persistent_term:get(?COUNTERS_KEY, undefined) of
        undefined -> persistent_term:put(?COUNTERS_KEY, counters:new(?COUNTER_SLOTS, [write_concurrency]));
        _ -> ok
    end.

%% @doc The VM-wide counters array (see stats_collector for the slot layout).
counters() ->
    persistent_term:get(?COUNTERS_KEY).
