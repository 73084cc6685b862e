%% The shared ETS tables and counters. Created from the supervisor's init/1 so
%% the supervisor owns them: a crashed worker is restarted onto intact state.
-module(messaging_tables).

-export([create/0, counters/0, queue_items/1, all_queue_items/0]).

%% Queue items, ordered so a user's messages are contiguous and oldest first:
%% {{UserId, Seq}, Msg}. One table per router shard (users hashed the same
%% way), so the shards do not insert into one shared tree: with a million
%% queued rows, two writers on one ordered_set are ~20-30% slower per insert.
-define(QUEUE_ITEMS_PREFIX, "messaging_queue_items_").
-define(ITEMS_KEY, {?MODULE, queue_items}).
%% Per-user bookkeeping: {UserId, NextSeq, Count, Dropped}
-define(QUEUE_META, messaging_queue_meta).

-define(COUNTERS_KEY, {?MODULE, counters}).
-define(COUNTER_SLOTS, 32).

create() ->
    Concurrent = [public, named_table, {read_concurrency, true}, {write_concurrency, true}],
    %% Tables written once per message get no read_concurrency: its reader
    %% locks make every write more expensive.
    WriteHeavy = [public, named_table, {write_concurrency, true}],
    Items = [new(Name, [ordered_set | WriteHeavy]) || Name <- queue_item_names()],
    persistent_term:put(?ITEMS_KEY, list_to_tuple(Items)),
    new(?QUEUE_META, [set | WriteHeavy]),
    %% Ids accepted recently: {Id, AcceptedAtMs}; makes client retries idempotent.
    new(messaging_known_ids, [set | WriteHeavy]),
    %% Messages not yet confirmed by Django, in acceptance order: {Seq, Msg}
    %% Its size is read on every request (overload check, persistence poke):
    %% decentralized counters would make ets:info(size) sum every scheduler's
    %% counter each time (tens of microseconds).
    new(messaging_persist_pending, [ordered_set, {decentralized_counters, false} | WriteHeavy]),
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

%% @doc The queue table holding UserId's rows (same hash as the router shards).
-spec queue_items(integer()) -> atom().
queue_items(UserId) ->
    Tables = persistent_term:get(?ITEMS_KEY),
    element(erlang:phash2(UserId, tuple_size(Tables)) + 1, Tables).

-spec all_queue_items() -> [atom()].
all_queue_items() ->
    tuple_to_list(persistent_term:get(?ITEMS_KEY)).

queue_item_names() ->
    [list_to_atom(?QUEUE_ITEMS_PREFIX ++ integer_to_list(I))
     || I <- lists:seq(1, erlang:system_info(schedulers))].
