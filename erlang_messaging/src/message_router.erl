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
         backlog/0, bench/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(CALL_TIMEOUT_MS, 10000).
-define(DISPATCH_ATTEMPTS, 20).
-define(RETRY_PAUSE_MS, 50).
-define(BACKLOG_KEY, {?MODULE, backlog}).
-define(BENCH_BATCH, 500).
%% Messages routed between two looks at the mailbox.
-define(CHUNK, 64).
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
    Groups = group_by_shard(lists:zip(lists:seq(1, length(Msgs)), Msgs)),
    Requests = [{Shard, Items, send_route(Shard, Items)} || {Shard, Items} <- Groups],
    Results = lists:append([await_route(Req) || Req <- Requests]),
    [Dropped || {_Pos, Dropped} <- lists:keysort(1, Results)].

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
%% cleared afterwards). Building the messages is part of the timed work.
%% Example: message_router:bench(1000000, erlang:system_info(schedulers)).
-spec bench(pos_integer(), pos_integer()) -> map().
bench(Total, Producers) ->
    PerProducer = max(1, Total div Producers),
    Parent = self(),
    Start = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() -> bench_producer(P, PerProducer), Parent ! {done, self()} end)
            || P <- lists:seq(1, Producers)],
    [receive {done, Pid} -> ok end || Pid <- Pids],
    Micros = max(1, erlang:monotonic_time(microsecond) - Start),
    message_queue_manager:clear_all(),
    Routed = PerProducer * Producers,
    #{messages => Routed, seconds => Micros / 1.0e6, per_second => Routed * 1.0e6 / Micros}.

%%====================================================================
%% Caller side of route_many/1
%%====================================================================

%% [{Shard, [{Pos, Msg}]}] with each shard's items in list order.
group_by_shard(Numbered) ->
    Count = shard_count(),
    Grouped = lists:foldl(fun(Item = {_Pos, #{receiver_id := UserId}}, Acc) ->
                                  Shard = erlang:phash2(UserId, Count) + 1,
                                  maps:update_with(Shard, fun(L) -> [Item | L] end, [Item], Acc)
                          end, #{}, Numbered),
    [{Shard, lists:reverse(Items)} || {Shard, Items} <- maps:to_list(Grouped)].

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
            logger:info("router shard ~b unavailable (~p), retrying", [Shard, reason_tag(Failure)]),
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
    gen_server:start_link({local, shard_name_by_index(Index)}, ?MODULE, Index, []).

%% waiters: call reference -> {From, MessagesLeft, [{Pos, Dropped}]}
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

settle_all([{Tag, Pos, _Msg} | Items], [Dropped | More], State) ->
    settle_all(Items, More, settle(Tag, Pos, Dropped, State));
settle_all([], [], State) ->
    State.

%% Reply to the caller once the last message of its batch is routed.
settle(Tag, Pos, Dropped, State = #{waiters := Waiters}) ->
    case maps:get(Tag, Waiters) of
        {From, 1, Acc} ->
            gen_server:reply(From, [{Pos, Dropped} | Acc]),
            State#{waiters := maps:remove(Tag, Waiters)};
        {From, Left, Acc} ->
            State#{waiters := Waiters#{Tag := {From, Left - 1, [{Pos, Dropped} | Acc]}}}
    end.

%% Queue, push to sessions, count. Returns the dropped counts in order.
route_chunk(Msgs) ->
    Dropped = message_queue_manager:push_many([{UserId, Msg} || Msg = #{receiver_id := UserId} <- Msgs]),
    [deliver_to_sessions(UserId, Msg) || Msg = #{receiver_id := UserId} <- Msgs],
    count_routed(Msgs, Dropped),
    Dropped.

count_routed(Msgs, Dropped) ->
    Totals = lists:foldl(fun({#{priority := P}, D}, Acc) ->
                                 maps:update_with(P, fun({R, DSum}) -> {R + 1, DSum + D} end,
                                                  {1, D}, Acc)
                         end, #{}, lists:zip(Msgs, Dropped)),
    maps:foreach(fun(Prio, {Routed, DroppedSum}) ->
                         stats_collector:count(routed, Prio, Routed),
                         stats_collector:count(dropped, Prio, DroppedSum)
                 end, Totals).

%% A WebSocket failure must never stop routing: the message is already queued.
deliver_to_sessions(UserId, Msg) ->
    try messaging_ws:deliver(UserId, Msg)
    catch Class:Reason ->
        logger:warning("ws delivery to ~p failed: ~p:~p", [UserId, Class, Reason])
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

bench_producer(Producer, Count) when Count > 0 ->
    Batch = min(Count, ?BENCH_BATCH),
    Msgs = [bench_message(Producer) || _ <- lists:seq(1, Batch)],
    route_many(Msgs),
    bench_producer(Producer, Count - Batch);
bench_producer(_Producer, _Count) ->
    ok.

%% Unique ids without the cost of a random UUID (this measures routing).
bench_message(Producer) ->
    Id = <<"bench-", (integer_to_binary(Producer))/binary, "-",
           (integer_to_binary(erlang:unique_integer([positive])))/binary>>,
    #{id => Id, conversation_id => null, sender_id => 1,
      receiver_id => ?BENCH_FIRST_USER + rand:uniform(?BENCH_USERS), text => <<"bench">>,
      priority => <<"normal">>, created_at => <<>>, broadcast_id => null}.
