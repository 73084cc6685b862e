%% Router shards. A message is routed by the shard chosen from its receiver id,
%% so one user's messages always pass through the same process in order, while
%% different users spread over erlang:system_info(schedulers) shards.
%%
%% Work reaches a shard in batches: route_many/1 splits a list of messages by
%% shard and makes one call per shard (all shards in parallel), so the cost of
%% a call is shared by every message in it. A single message is a batch of one.
%%
%% A shard does not serve its mailbox in arrival order: each batch is first
%% moved into a priority_sched (high/normal/low, weighted 8:3:1) and routed
%% from there, and the shard looks at its mailbox again after every message.
%% So a high message arriving behind a low backlog overtakes it, and low still
%% moves.
%%
%% Routing one message = push into the receiver's bounded queue, push to the
%% receiver's WebSocket sessions (messaging_ws:deliver/2) and count it.
%% dispatch_many/1 is the full intake used by HTTP, broadcasts and WAL replay:
%% it hands the (already written) messages to persistence *before* routing, so
%% a router crash can never lose an acknowledged message.
-module(message_router).
-behaviour(gen_server).

-export([start_link/1, shard_count/0, dispatch/1, dispatch_many/1, route_many/1, route_sync/1,
         route_async/1, await_async/1, backlog/0, bench/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

-define(CALL_TIMEOUT_MS, 10000).
-define(DISPATCH_ATTEMPTS, 20).
-define(RETRY_PAUSE_MS, 50).
-define(BACKLOG_KEY, {?MODULE, backlog}).
-define(BENCH_BATCH, 500).
-define(BENCH_POOL, 20).
%% Messages routed between two looks at the mailbox: a high message that
%% arrives meanwhile waits behind at most this many (well under a millisecond).
-define(CHUNK, 256).
-define(BENCH_USERS, 10000).
-define(BENCH_FIRST_USER, 1000000000).

%%====================================================================
%% API
%%====================================================================

-spec shard_count() -> pos_integer().
shard_count() ->
    erlang:system_info(schedulers).

%% @doc dispatch_many/1 for one message.
-spec dispatch(map()) -> {ok, non_neg_integer()}.
dispatch(Msg) ->
    [Dropped] = dispatch_many([Msg]),
    {ok, Dropped}.

%% @doc Hand durable messages to persistence, then route them. Retries while
%% a crashed shard is being restarted. Returns, per message and in order, how
%% many old messages the receiver's queue dropped.
-spec dispatch_many([map()]) -> [non_neg_integer()].
dispatch_many(Msgs) ->
    ok = message_persistence:enqueue_many(Msgs),
    route_many(Msgs).

%% @doc Route messages and wait until each is in its receiver's queue and
%% pushed to their sessions. Per-user order follows list order.
-spec route_many([map()]) -> [non_neg_integer()].
route_many([]) ->
    [];
route_many(Msgs) ->
    Requests = [{Shard, Items, send_route(Shard, Items)} || {Shard, Items} <- group_by_shard(Msgs)],
    Drops = lists:append([await_route(Req) || Req <- Requests]),
    spread_drops(1, lists:keysort(1, Drops), length(Msgs)).

%% Shards report only the messages that made their queue drop something
%% (rare), as {Pos, Dropped}; every other message dropped nothing.
spread_drops(Pos, _Drops, Count) when Pos > Count ->
    [];
spread_drops(Pos, [{Pos, Dropped} | Drops], Count) ->
    [Dropped | spread_drops(Pos + 1, Drops, Count)];
spread_drops(Pos, Drops, Count) ->
    [0 | spread_drops(Pos + 1, Drops, Count)].

%% @doc Start routing several callers' messages at once, on their behalf
%% (used by the WAL owner for each written group, so a request does not need
%% a round trip of its own). Batches is [{CallerPid, Msgs}] in log order; each
%% shard gets one message for the whole group and answers every caller
%% directly. Returns one ticket per batch, in order, for await_async/1 in the
%% caller.
-spec route_async([{pid(), [map()]}]) -> [term()].
route_async(Batches) ->
    Count = shard_count(),
    Names = shard_names(),
    Pids = list_to_tuple([whereis(element(I, Names)) || I <- lists:seq(1, Count)]),
    {Tickets, Calls} =
        lists:foldl(fun({Caller, Msgs}, {TicketsAcc, CallsAcc}) ->
                            Parts = [{Shard, element(Shard, Pids), make_ref(), Items}
                                     || {Shard, Items} <- group_by_shard(Msgs)],
                            CallsAcc1 = lists:foldl(
                                          fun({Shard, _Pid, Ref, Items}, Acc) ->
                                                  setelement(Shard, Acc, [{{Caller, Ref}, Items} | element(Shard, Acc)])
                                          end, CallsAcc, Parts),
                            {[{length(Msgs), Parts} | TicketsAcc], CallsAcc1}
                    end, {[], erlang:make_tuple(Count, [])}, Batches),
    [send_group(element(Shard, Pids), lists:reverse(element(Shard, Calls)))
     || Shard <- lists:seq(1, Count), element(Shard, Calls) =/= []],
    lists:reverse(Tickets).

send_group(undefined, _Calls) -> ok;
send_group(Pid, Calls) -> Pid ! {route_group, Calls}, ok.

%% @doc In the caller named in route_async/1: wait for its messages to be
%% routed; a shard that was down (or dies) gets them again synchronously, as
%% in route_many/1. Returns the dropped counts in order.
-spec await_async(term()) -> [non_neg_integer()].
await_async({Count, Parts}) ->
    Drops = lists:append([await_part(Part) || Part <- Parts]),
    spread_drops(1, lists:keysort(1, Drops), Count).

await_part({Shard, undefined, _Ref, Items}) ->
    await_route({Shard, Items, send_route(Shard, Items)});
await_part({Shard, Pid, Ref, Items}) ->
    receive
        {Ref, Results} -> Results
    after 0 ->
        Mon = erlang:monitor(process, Pid),
        receive
            {Ref, Results} ->
                erlang:demonitor(Mon, [flush]),
                Results;
            {'DOWN', Mon, process, _, _} ->
                receive {Ref, Results} -> Results
                after 0 -> await_route({Shard, Items, send_route(Shard, Items)})
                end
        after ?CALL_TIMEOUT_MS ->
            erlang:demonitor(Mon, [flush]),
            await_route({Shard, Items, send_route(Shard, Items)})
        end
    end.

%% @doc Route one message (no persistence hand-off).
-spec route_sync(map()) -> {ok, non_neg_integer()}.
route_sync(Msg) ->
    [Dropped] = route_many([Msg]),
    {ok, Dropped}.

%% @doc Largest number of messages waiting inside any one shard.
-spec backlog() -> non_neg_integer().
backlog() ->
    case persistent_term:get(?BACKLOG_KEY, undefined) of
        undefined -> 0;
        Ref -> lists:max([atomics:get(Ref, I) || I <- lists:seq(1, shard_count())])
    end.

%% @doc In-VM routing benchmark: Producers processes route Total messages
%% through route_many/1 (the path dispatch_many/1 takes after persistence) in
%% batches of 500, to 10000 synthetic users (ids from 10^9 up; the queues are
%% cleared afterwards). Each producer builds 20 batches before the clock
%% starts and cycles through them, so the timed work is the routing.
%% Example: message_router:bench(1000000, erlang:system_info(schedulers)).
-spec bench(pos_integer(), pos_integer()) -> map().
bench(Total, Producers) ->
    PerProducer = max(1, Total div Producers),
    Parent = self(),
    Pids = [spawn_link(fun() -> bench_producer(Parent, P, PerProducer), Parent ! {done, self()} end)
            || P <- lists:seq(1, Producers)],
    [receive {ready, Pid} -> ok end || Pid <- Pids],
    Start = erlang:monotonic_time(microsecond),
    [Pid ! go || Pid <- Pids],
    [receive {done, Pid} -> ok end || Pid <- Pids],
    Micros = max(1, erlang:monotonic_time(microsecond) - Start),
    message_queue_manager:clear_all(),
    Routed = PerProducer * Producers,
    #{messages => Routed, seconds => Micros / 1.0e6, per_second => Routed * 1.0e6 / Micros}.

%%====================================================================
%% Caller side of route_many/1
%%====================================================================

%% [{Shard, [{Pos, Msg}]}] with each shard's items in list order (Pos is the
%% message's place in Msgs). One pass, one list per shard in a tuple.
group_by_shard(Msgs) ->
    Count = shard_count(),
    {_, Grouped} = lists:foldl(fun(Msg = #{receiver_id := UserId}, {Pos, Acc}) ->
                                       Shard = erlang:phash2(UserId, Count) + 1,
                                       {Pos + 1, setelement(Shard, Acc, [{Pos, Msg} | element(Shard, Acc)])}
                               end, {1, erlang:make_tuple(Count, [])}, Msgs),
    [{Shard, lists:reverse(Items)} || {Shard, Items} <- lists:zip(lists:seq(1, Count), tuple_to_list(Grouped)),
                                      Items =/= []].

send_route(Shard, Items) ->
    gen_server:send_request(shard_name_by_index(Shard), {route, Items}).

%% A shard that is down or restarting is retried on its own, synchronously:
%% the other shards' messages are already routed.
await_route(Request) ->
    await_route(Request, ?DISPATCH_ATTEMPTS).

await_route({Shard, Items, ReqId}, AttemptsLeft) ->
    case gen_server:wait_response(ReqId, ?CALL_TIMEOUT_MS) of
        {reply, Results} ->
            Results;
        Failure when AttemptsLeft > 1 ->
            ?LOG_INFO("router shard ~b unavailable (~p), retrying", [Shard, reason_tag(Failure)]),
            timer:sleep(?RETRY_PAUSE_MS),
            await_route({Shard, Items, send_route(Shard, Items)}, AttemptsLeft - 1);
        Failure ->
            exit({router_unavailable, reason_tag(Failure)})
    end.

reason_tag({error, {Reason, _Server}}) -> reason_tag(Reason);
reason_tag({Tag, _}) -> Tag;
reason_tag(Other) -> Other.

%%====================================================================
%% Shard process
%%====================================================================

start_link(Index) ->
    %% A shard takes whole batches at once; a larger heap avoids a string of
    %% garbage collections while it grows to that size every time.
    gen_server:start_link({local, shard_name_by_index(Index)}, ?MODULE, Index,
                          [{spawn_opt, [{min_heap_size, 233681}]}]).

%% waiters: call reference -> {From, MessagesLeft, [{Pos, Dropped}] of nonzero drops}
init(Index) ->
    ensure_backlog_counters(),
    atomics:put(backlog_ref(), Index, 0),
    {ok, #{index => Index, sched => priority_sched:new(), waiters => #{}}}.

handle_call({route, Items}, From, State) ->
    continue(enqueue(From, Items, State));
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    continue(State).

%% Several callers' batches from one WAL group (see route_async/1).
handle_info({route_group, Calls}, State) ->
    continue(lists:foldl(fun({From, Items}, S) -> enqueue(From, Items, S) end, State, Calls));
%% timeout 0 fires only once the mailbox is empty.
handle_info(timeout, State) ->
    continue(drain(State));
handle_info(_Other, State) ->
    continue(State).

%% Come back to drain (after reading the mailbox) only while work is waiting.
continue(State = #{sched := Sched}) ->
    case priority_sched:len(Sched) of
        0 -> {noreply, State};
        _ -> {noreply, State, 0}
    end.

enqueue(From, Items, State = #{sched := Sched, waiters := Waiters}) ->
    Tag = make_ref(),
    {High, Normal, Low} = split_by_priority(Tag, Items),
    Sched1 = priority_sched:in_many(low, Low, priority_sched:in_many(
                 normal, Normal, priority_sched:in_many(high, High, Sched))),
    publish_backlog(State#{sched := Sched1,
                           waiters := Waiters#{Tag => {From, length(Items), []}}}).

%% Three lists of {Tag, Pos, Msg}, each in arrival order.
split_by_priority(Tag, Items) ->
    {H, N, L} = lists:foldl(fun({Pos, Msg}, {Hs, Ns, Ls}) ->
                                    Item = {Tag, Pos, Msg},
                                    case priority_atom(Msg) of
                                        high -> {[Item | Hs], Ns, Ls};
                                        normal -> {Hs, [Item | Ns], Ls};
                                        low -> {Hs, Ns, [Item | Ls]}
                                    end
                            end, {[], [], []}, Items),
    {lists:reverse(H), lists:reverse(N), lists:reverse(L)}.

%% Route until the scheduler is empty or something new is in the mailbox.
%% Messages are taken CHUNK at a time in scheduler order so the queue rows go
%% into ETS with one insert per chunk; checking the mailbox between chunks is
%% what lets a fresh high message overtake a backlog.
drain(State = #{sched := Sched}) ->
    case mailbox_empty() andalso priority_sched:out_many(?CHUNK, Sched) of
        {[_ | _] = Taken, Rest} ->
            Chunk = [Item || {_Prio, Item} <- Taken],
            Dropped = route_chunk([Msg || {_Tag, _Pos, Msg} <- Chunk]),
            drain(settle_all(Chunk, Dropped, State#{sched := Rest}));
        _EmptyOrMail ->
            publish_backlog(State)
    end.

mailbox_empty() ->
    {message_queue_len, 0} =:= erlang:process_info(self(), message_queue_len).

%% Items of one call come out in runs (a chunk is mostly one caller's), so
%% each run updates its waiter once.
settle_all([{Tag, _, _} | _] = Items, Dropped, State) ->
    {RunLength, Drops, RestItems, RestDropped} = run_of(Tag, Items, Dropped, 0, []),
    settle_all(RestItems, RestDropped, settle(Tag, RunLength, Drops, State));
settle_all([], [], State) ->
    State.

%% How many leading items belong to Tag, and their nonzero drops.
run_of(Tag, [{Tag, _Pos, _} | Items], [0 | More], N, Drops) ->
    run_of(Tag, Items, More, N + 1, Drops);
run_of(Tag, [{Tag, Pos, _} | Items], [Dropped | More], N, Drops) ->
    run_of(Tag, Items, More, N + 1, [{Pos, Dropped} | Drops]);
run_of(_Tag, Items, Dropped, N, Drops) ->
    {N, Drops, Items, Dropped}.

%% Reply to the caller once the last message of its batch is routed.
settle(Tag, RunLength, Drops, State = #{waiters := Waiters}) ->
    {From, Left, Acc} = maps:get(Tag, Waiters),
    case Left - RunLength of
        0 ->
            gen_server:reply(From, Drops ++ Acc),
            State#{waiters := maps:remove(Tag, Waiters)};
        Remaining ->
            State#{waiters := Waiters#{Tag := {From, Remaining, Drops ++ Acc}}}
    end.

%% Queue, push to sessions, count. Returns the dropped counts in order.
route_chunk(Msgs) ->
    Dropped = message_queue_manager:push_many([{UserId, Msg} || Msg = #{receiver_id := UserId} <- Msgs]),
    [deliver_to_sessions(UserId, Msg) || Msg = #{receiver_id := UserId} <- Msgs],
    count_routed(Msgs, Dropped),
    Dropped.

%% Counts per priority, tallied in a tuple: {High, Normal, Low}.
count_routed(Msgs, Dropped) ->
    count_by_priority(routed, lists:foldl(fun tally/2, {0, 0, 0}, Msgs)),
    case lists:sum(Dropped) of
        0 -> ok;
        _ -> count_by_priority(dropped, lists:foldl(fun tally_dropped/2, {0, 0, 0},
                                                    lists:zip(Msgs, Dropped)))
    end.

tally(Msg, Counts) ->
    Index = priority_index(Msg),
    setelement(Index, Counts, element(Index, Counts) + 1).

tally_dropped({Msg, Dropped}, Counts) ->
    Index = priority_index(Msg),
    setelement(Index, Counts, element(Index, Counts) + Dropped).

count_by_priority(Metric, {High, Normal, Low}) ->
    stats_collector:count(Metric, high, High),
    stats_collector:count(Metric, normal, Normal),
    stats_collector:count(Metric, low, Low).

priority_index(Msg) ->
    case priority_atom(Msg) of
        high -> 1;
        normal -> 2;
        low -> 3
    end.

%% A WebSocket failure must never stop routing: the message is already queued.
deliver_to_sessions(UserId, Msg) ->
    try messaging_ws:deliver(UserId, Msg)
    catch Class:Reason ->
        ?LOG_WARNING("ws delivery to ~p failed: ~p:~p", [UserId, Class, Reason])
    end.

%%====================================================================
%% Helpers
%%====================================================================

shard_name_by_index(Index) ->
    element(Index, shard_names()).

%% Names are built once; list_to_atom on every route would be wasted work.
shard_names() ->
    case persistent_term:get({?MODULE, names}, undefined) of
        undefined ->
            Names = list_to_tuple([list_to_atom("message_router_" ++ integer_to_list(I))
                                   || I <- lists:seq(1, shard_count())]),
            persistent_term:put({?MODULE, names}, Names),
            Names;
        Names ->
            Names
    end.

priority_atom(#{priority := <<"high">>}) -> high;
priority_atom(#{priority := <<"low">>}) -> low;
priority_atom(_) -> normal.

ensure_backlog_counters() ->
    case persistent_term:get(?BACKLOG_KEY, undefined) of
        undefined -> persistent_term:put(?BACKLOG_KEY, atomics:new(shard_count(), []));
        _ -> ok
    end.

backlog_ref() ->
    persistent_term:get(?BACKLOG_KEY).

publish_backlog(State = #{index := Index, sched := Sched}) ->
    atomics:put(backlog_ref(), Index, priority_sched:len(Sched)),
    State.

%% Each producer cycles through its own pre-built batches, so the timed work
%% is routing, not building maps. Every routed message becomes its own queue
%% row (rows are keyed by user and sequence number, not by message id).
bench_producer(Parent, Producer, Count) ->
    Batches = [[bench_message(Producer, B * ?BENCH_BATCH + I) || I <- lists:seq(1, ?BENCH_BATCH)]
               || B <- lists:seq(1, ?BENCH_POOL)],
    Parent ! {ready, self()},
    receive go -> ok end,
    bench_loop(Batches, Batches, Count).

bench_loop(_Pool, _Batches, Count) when Count =< 0 ->
    ok;
bench_loop(Pool, [], Count) ->
    bench_loop(Pool, Pool, Count);
bench_loop(Pool, [Batch | Batches], Count) ->
    route_many(case Count < ?BENCH_BATCH of
                   true -> lists:sublist(Batch, Count);
                   false -> Batch
               end),
    bench_loop(Pool, Batches, Count - ?BENCH_BATCH).

bench_message(Producer, N) ->
    Id = <<"bench-", (integer_to_binary(Producer))/binary, "-", (integer_to_binary(N))/binary>>,
    #{id => Id, conversation_id => null, sender_id => 1,
      receiver_id => ?BENCH_FIRST_USER + rand:uniform(?BENCH_USERS), text => <<"bench">>,
      priority => <<"normal">>, created_at => <<>>, broadcast_id => null}.
