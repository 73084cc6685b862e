%% Router shards. A message is routed by the shard chosen from its receiver id,
%% so one user's messages always pass through the same process in order, while
%% different users spread over erlang:system_info(schedulers) shards.
%%
%% A shard does not serve its mailbox in arrival order: each request is first
%% moved into a priority_sched (high/normal/low, weighted 8:3:1) and work is
%% taken from there only when the mailbox is empty (gen_server timeout 0). So a
%% high message arriving behind a low backlog overtakes it, and low still moves.
%%
%% Routing one message = push into the receiver's bounded queue, push to the
%% receiver's WebSocket sessions (messaging_ws:deliver/2) and count it.
%% dispatch/1 is the full intake used by HTTP, broadcasts and WAL replay: it
%% hands the (already durable) message to persistence *before* routing, so a
%% router crash can never lose an acknowledged message.
-module(message_router).
-behaviour(gen_server).

-export([start_link/1, shard_count/0, dispatch/1, route_sync/1, route_async/1,
         backlog/0, bench/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(CALL_TIMEOUT_MS, 10000).
-define(DISPATCH_ATTEMPTS, 20).
-define(RETRY_PAUSE_MS, 50).
-define(BACKLOG_KEY, {?MODULE, backlog}).

%%====================================================================
%% API
%%====================================================================

-spec shard_count() -> pos_integer().
shard_count() ->
    erlang:system_info(schedulers).

%% @doc Hand a durable message to persistence, then route it. Retries while a
%% crashed shard is being restarted. Returns how many old messages the
%% receiver's queue dropped.
-spec dispatch(map()) -> {ok, non_neg_integer()}.
dispatch(Msg) ->
    ok = message_persistence:enqueue(Msg),
    route_with_retry(Msg, ?DISPATCH_ATTEMPTS).

%% @doc Route one message and wait until it is in the receiver's queue and
%% pushed to their sessions. Also the in-VM benchmark entry point.
-spec route_sync(map()) -> {ok, non_neg_integer()}.
route_sync(Msg = #{receiver_id := UserId}) ->
    gen_server:call(shard_name(UserId), {route, Msg}, ?CALL_TIMEOUT_MS).

%% @doc Route without waiting (fire and forget; ordering per user still holds).
-spec route_async(map()) -> ok.
route_async(Msg = #{receiver_id := UserId}) ->
    gen_server:cast(shard_name(UserId), {route, Msg}).

%% @doc Largest number of messages waiting inside any one shard.
-spec backlog() -> non_neg_integer().
backlog() ->
    case persistent_term:get(?BACKLOG_KEY, undefined) of
        undefined -> 0;
        Ref -> lists:max([atomics:get(Ref, I) || I <- lists:seq(1, shard_count())])
    end.

%% @doc In-VM routing benchmark: Workers processes route Total messages with
%% route_sync/1 to 10000 synthetic users (ids from 10^9 up, queues cleared
%% afterwards). Returns throughput. Example:
%%   message_router:bench(200000, 64).
-spec bench(pos_integer(), pos_integer()) -> map().
bench(Total, Workers) ->
    PerWorker = max(1, Total div Workers),
    Parent = self(),
    Start = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() -> bench_worker(PerWorker), Parent ! {done, self()} end)
            || _ <- lists:seq(1, Workers)],
    [receive {done, P} -> ok end || P <- Pids],
    Micros = max(1, erlang:monotonic_time(microsecond) - Start),
    message_queue_manager:clear_all(),
    Routed = PerWorker * Workers,
    #{messages => Routed, seconds => Micros / 1.0e6, per_second => Routed * 1.0e6 / Micros}.

%%====================================================================
%% Shard process
%%====================================================================

start_link(Index) ->
    gen_server:start_link({local, shard_name_by_index(Index)}, ?MODULE, Index, []).

init(Index) ->
    ensure_backlog_counters(),
    atomics:put(backlog_ref(), Index, 0),
    {ok, #{index => Index, sched => priority_sched:new()}}.

handle_call({route, Msg}, From, State) ->
    {noreply, enqueue({reply, From}, Msg, State), 0};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State, 0}.

handle_cast({route, Msg}, State) ->
    {noreply, enqueue(noreply, Msg, State), 0};
handle_cast(_Msg, State) ->
    {noreply, State, 0}.

%% timeout 0 fires only once the mailbox is empty: route one message, then
%% look at the mailbox again so newly arrived high messages get their turn.
handle_info(timeout, State) ->
    drain_one(State);
handle_info(_Other, State) ->
    {noreply, State, 0}.

enqueue(ReplyTo, Msg, State = #{sched := Sched}) ->
    Prio = priority_atom(maps:get(priority, Msg, <<"normal">>)),
    publish_backlog(State#{sched := priority_sched:in(Prio, {ReplyTo, Msg}, Sched)}).

drain_one(State = #{sched := Sched}) ->
    case priority_sched:out(Sched) of
        {empty, _} ->
            {noreply, State};
        {{value, _Prio, {ReplyTo, Msg}}, Rest} ->
            Result = route(Msg),
            reply(ReplyTo, Result),
            {noreply, publish_backlog(State#{sched := Rest}), 0}
    end.

route(Msg = #{receiver_id := UserId, priority := Prio}) ->
    {ok, Dropped} = message_queue_manager:push(UserId, Msg),
    deliver_to_sessions(UserId, Msg),
    stats_collector:count(routed, Prio, 1),
    stats_collector:count(dropped, Prio, Dropped),
    {ok, Dropped}.

%% A WebSocket failure must never stop routing: the message is already queued.
deliver_to_sessions(UserId, Msg) ->
    try messaging_ws:deliver(UserId, Msg)
    catch Class:Reason ->
        logger:warning("ws delivery to ~p failed: ~p:~p", [UserId, Class, Reason])
    end.

reply({reply, From}, Result) -> gen_server:reply(From, Result);
reply(noreply, _Result) -> ok.

%%====================================================================
%% Helpers
%%====================================================================

route_with_retry(Msg, AttemptsLeft) ->
    try route_sync(Msg)
    catch exit:Reason when AttemptsLeft > 1 ->
        logger:info("router shard unavailable (~p), retrying", [reason_tag(Reason)]),
        timer:sleep(?RETRY_PAUSE_MS),
        route_with_retry(Msg, AttemptsLeft - 1)
    end.

reason_tag({Tag, _}) -> Tag;
reason_tag(Other) -> Other.

shard_name(UserId) ->
    shard_name_by_index(erlang:phash2(UserId, shard_count()) + 1).

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

priority_atom(<<"high">>) -> high;
priority_atom(<<"low">>) -> low;
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

bench_worker(0) ->
    ok;
bench_worker(N) ->
    UserId = 1000000000 + rand:uniform(10000),
    {ok, _} = route_sync(#{id => message_ids:new_uuid(), conversation_id => null,
                           sender_id => 1, receiver_id => UserId, text => <<"bench">>,
                           priority => <<"normal">>, created_at => <<>>, broadcast_id => null}),
    bench_worker(N - 1).
