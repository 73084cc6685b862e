%% Ships accepted messages to Django in batches:
%%   POST {DJANGO_API_URL}/api/messaging/erlang/persist/  {"messages": [...]}
%%
%% Pending messages live in the supervisor-owned ordered_set
%% messaging_persist_pending keyed by a monotonic sequence number, so they are
%% sent oldest first (which keeps every conversation in order) and survive a
%% crash of this process. A message leaves the table only once Django has
%% confirmed it (stored, duplicate or rejected); rejected ones are counted as
%% failures and never retried. Any other outcome keeps the whole batch and
%% retries with exponential backoff (100 ms doubling to 10 s).
%%
%% One batch is in flight at a time, posted from a monitored helper process so
%% this server stays responsive. Confirmed ids are reported to message_wal so
%% the log can be compacted.
%%
%% Each message carries the X-Request-Id of the request that brought it
%% (request_id, absent on messages accepted before request ids existed), and
%% so does each item of the callback; the callback itself gets a fresh
%% X-Request-Id, named in this module's log lines about it.
-module(message_persistence).
-behaviour(gen_server).

-export([start_link/0, enqueue/1, enqueue_many/1, pending_count/0, django_reachable/0, flush/0,
         lag_seconds/0, last_callback/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

-define(PENDING, messaging_persist_pending).
-define(PERSIST_PATH, "/api/messaging/erlang/persist/").
-define(MIN_BACKOFF_MS, 100).
-define(MAX_BACKOFF_MS, 10000).
-define(PROBE_INTERVAL_MS, 5000).
-define(POKED_KEY, {?MODULE, poked}).

%%====================================================================
%% API
%%====================================================================

%% @doc Queue a durable message for Django. Lossless even while this process
%% is restarting: the row is in ETS and the next tick picks it up.
-spec enqueue(map()) -> ok.
enqueue(Msg) ->
    enqueue_many([Msg]).

%% @doc Queue durable messages for Django, in list order (one ETS insert).
-spec enqueue_many([map()]) -> ok.
enqueue_many([]) ->
    ok;
enqueue_many(Msgs) ->
    true = ets:insert(?PENDING, [{erlang:unique_integer([monotonic, positive]), Msg}
                                 || Msg <- Msgs]),
    maybe_poke(),
    ok.

-spec pending_count() -> non_neg_integer().
pending_count() ->
    ets:info(?PENDING, size).

%% @doc Last known reachability of Django (from batches and idle probes).
-spec django_reachable() -> boolean().
django_reachable() ->
    case ets:lookup(messaging_state, django_reachable) of
        [{_, Reachable}] -> Reachable;
        [] -> false
    end.

%% @doc Age in seconds of the oldest message Django has not confirmed yet (0
%% when none): how far persistence is behind. Measured from the message's
%% created_at, so a message replayed after a restart counts from when it was
%% first accepted.
-spec lag_seconds() -> float().
lag_seconds() ->
    case ets:first(?PENDING) of
        '$end_of_table' -> 0.0;
        Seq -> age_seconds(ets:lookup(?PENDING, Seq))
    end.

age_seconds([{_Seq, #{created_at := CreatedAt}}]) when is_binary(CreatedAt) ->
    try calendar:rfc3339_to_system_time(binary_to_list(CreatedAt), [{unit, millisecond}]) of
        AcceptedMs -> max(0, erlang:system_time(millisecond) - AcceptedMs) / 1000
    catch _:_ -> 0.0
    end;
%% Confirmed (and deleted) between first/1 and lookup/2, or no timestamp.
age_seconds(_Row) ->
    0.0.

%% @doc The last persistence callback: how it ended and when (unix seconds),
%% or undefined before the first one.
-spec last_callback() -> undefined | #{outcome := ok | failed, status := integer() | null,
                                        at := integer()}.
last_callback() ->
    case ets:lookup(messaging_state, last_callback) of
        [{_, Last}] -> Last;
        [] -> undefined
    end.

%% @doc Send what is pending now instead of waiting for the next tick.
flush() ->
    gen_server:cast(?MODULE, flush).

%%====================================================================
%% gen_server
%%====================================================================

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

init([]) ->
    persistent_term:put(?POKED_KEY, atomics:new(1, [])),
    persistent_term:put({?MODULE, batch_size}, messaging_config:get(persist_batch_size)),
    self() ! probe,
    {ok, schedule_tick(#{inflight => undefined, backoff => 0, retry_at => undefined,
                         batch_size => messaging_config:get(persist_batch_size),
                         interval => messaging_config:get(persist_flush_interval_ms)})}.

handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(flush, State) ->
    {noreply, maybe_send(State)};
handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(tick, State) ->
    {noreply, maybe_send(schedule_tick(State))};
handle_info(poke, State) ->
    {noreply, maybe_send(State)};
handle_info(retry, State) ->
    {noreply, maybe_send(State)};
handle_info(probe, State) ->
    start_probe(State),
    erlang:send_after(?PROBE_INTERVAL_MS, self(), probe),
    {noreply, State};
handle_info({probe_result, Reachable}, State) ->
    set_reachable(Reachable),
    {noreply, State};
handle_info({batch_result, Tag, Result}, State = #{inflight := {MonRef, Tag, Batch}}) ->
    erlang:demonitor(MonRef, [flush]),
    {noreply, handle_result(Result, Batch, Tag, State#{inflight := undefined})};
handle_info({'DOWN', MonRef, process, _Pid, Reason}, State = #{inflight := {MonRef, Tag, Batch}}) ->
    {noreply, handle_result({error, {sender_died, Reason}}, Batch, Tag,
                            State#{inflight := undefined})};
handle_info(_Other, State) ->
    {noreply, State}.

%%====================================================================
%% Sending
%%====================================================================

maybe_send(State = #{inflight := undefined, retry_at := RetryAt, batch_size := Size}) ->
    reset_poke(),
    %% retry_at is set only while backing off after a failure.
    case RetryAt =:= undefined orelse now_ms() >= RetryAt of
        true -> send_batch(take_batch(Size), State);
        false -> State
    end;
maybe_send(State) ->
    State.

send_batch([], State) ->
    State;
%% The callback's own request id doubles as the tag of its result.
send_batch(Batch, State) ->
    Parent = self(),
    Tag = messaging_request_id:new(),
    Body = #{messages => [Msg || {_Seq, Msg} <- Batch]},
    {_Pid, MonRef} = spawn_monitor(fun() ->
        Result = django_client:post_json(?PERSIST_PATH, Body, #{request_id => Tag}),
        Parent ! {batch_result, Tag, Result}
    end),
    State#{inflight := {MonRef, Tag, Batch}}.

take_batch(Size) ->
    case ets:select(?PENDING, [{'_', [], ['$_']}], Size) of
        {Rows, _Continuation} -> Rows;
        '$end_of_table' -> []
    end.

handle_result({ok, Status, Reply}, Batch, RequestId, State) when Status >= 200, Status < 300 ->
    set_reachable(true),
    record_callback(ok, Status),
    confirm(Batch, Reply, RequestId),
    next_after_success(State#{backoff := 0, retry_at := undefined});
handle_result(Failure, Batch, RequestId, State = #{backoff := Backoff}) ->
    set_reachable(reached_django(Failure)),
    record_callback(failed, http_status(Failure)),
    stats_collector:persistence_failure(1),
    ?LOG_WARNING("persisting ~p messages failed: ~p", [length(Batch), summarize(Failure)],
                 #{request_id => RequestId}),
    Next = next_backoff(Backoff),
    erlang:send_after(Next, self(), retry),
    State#{backoff := Next, retry_at := now_ms() + Next}.

%% A full batch waiting? Send it now; otherwise the tick picks up the rest.
next_after_success(State = #{batch_size := Size}) ->
    case pending_count() >= Size of
        true -> maybe_send(State);
        false -> State
    end.

next_backoff(0) -> ?MIN_BACKOFF_MS;
next_backoff(Ms) -> min(Ms * 2, ?MAX_BACKOFF_MS).

%% Everything Django listed is settled; anything it did not mention stays
%% pending and goes out again in the next batch.
confirm(Batch, Reply, RequestId) ->
    {Settled, Rejected} = settled_ids(Reply),
    Confirmed = [Row || Row = {_Seq, #{id := Id}} <- Batch, sets:is_element(Id, Settled)],
    [ets:delete(?PENDING, Seq) || {Seq, _} <- Confirmed],
    [count_outcome(Msg, Rejected) || {_, Msg} <- Confirmed],
    log_rejections(Rejected, [Msg || {_, Msg} <- Confirmed], RequestId),
    message_wal:confirmed([Id || {_, #{id := Id}} <- Confirmed]).

settled_ids(Reply) when is_map(Reply) ->
    Stored = id_list(maps:get(<<"stored">>, Reply, [])),
    Duplicates = id_list(maps:get(<<"duplicates">>, Reply, [])),
    Rejected = [{Id, Err} || #{<<"id">> := Id} = R <- list_or_empty(maps:get(<<"rejected">>, Reply, [])),
                             Err <- [maps:get(<<"error">>, R, null)]],
    RejectedIds = [Id || {Id, _} <- Rejected],
    {sets:from_list(Stored ++ Duplicates ++ RejectedIds, [{version, 2}]), maps:from_list(Rejected)};
settled_ids(_Reply) ->
    {sets:new([{version, 2}]), #{}}.

id_list(L) when is_list(L) -> [Id || Id <- L, is_binary(Id)];
id_list(_) -> [].

list_or_empty(L) when is_list(L) -> L;
list_or_empty(_) -> [].

count_outcome(#{id := Id, priority := Prio}, Rejected) ->
    case maps:is_key(Id, Rejected) of
        true ->
            stats_collector:persistence_failure(1),
            stats_collector:dead_lettered(1);
        false ->
            stats_collector:count(persisted, Prio, 1)
    end.

log_rejections(Rejected, _Msgs, _RequestId) when map_size(Rejected) =:= 0 ->
    ok;
%% The ids of the requests that brought them lead to Django's log lines.
log_rejections(Rejected, Msgs, RequestId) ->
    Origins = [maps:get(request_id, Msg, null) || Msg = #{id := Id} <- Msgs,
                                                  maps:is_key(Id, Rejected)],
    ?LOG_ERROR("Django rejected messages (not retried): ~p", [Rejected],
               #{request_id => RequestId, message_request_ids => Origins}).

%% A non-2xx answer still means Django is up; a transport error does not.
reached_django({ok, _Status, _}) -> true;
reached_django(_) -> false.

summarize({ok, Status, _Body}) -> {http_status, Status};
summarize(Other) -> Other.

http_status({ok, Status, _Body}) -> Status;
http_status(_TransportError) -> null.

record_callback(Outcome, Status) ->
    stats_collector:persistence_batch(Outcome),
    ets:insert(messaging_state, {last_callback, #{outcome => Outcome, status => Status,
                                                  at => erlang:system_time(second)}}).

%%====================================================================
%% Helpers
%%====================================================================

schedule_tick(State = #{interval := Interval}) ->
    erlang:send_after(Interval, self(), tick),
    State.

%% Poke the server when a full batch is waiting, at most once until it
%% looks at the table again (the atomic flag keeps the mailbox small).
maybe_poke() ->
    case persistent_term:get(?POKED_KEY, undefined) of
        undefined ->
            ok;
        Flag ->
            case ets:info(?PENDING, size) >= batch_size()
                andalso atomics:compare_exchange(Flag, 1, 0, 1) =:= ok of
                true -> catch ?MODULE ! poke, ok;
                false -> ok
            end
    end.

reset_poke() ->
    atomics:put(persistent_term:get(?POKED_KEY), 1, 0).

batch_size() ->
    persistent_term:get({?MODULE, batch_size}, 500).

start_probe(#{inflight := undefined}) ->
    Parent = self(),
    spawn(fun() -> Parent ! {probe_result, django_client:probe()} end);
start_probe(_Busy) ->
    ok.

set_reachable(Reachable) ->
    ets:insert(messaging_state, {django_reachable, Reachable}).

now_ms() ->
    erlang:monotonic_time(millisecond).
