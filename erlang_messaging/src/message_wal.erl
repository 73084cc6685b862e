%% Write-ahead log (disk_log). An HTTP request is answered 202 only after its
%% message is in the log *and* disk_log:sync/1 has run.
%%
%% Group commit without a timer: appends that arrive while a sync is running
%% wait in memory; as soon as that sync is done they are written with one
%% disk_log:log_terms/2 and synced together by one disk_log:sync/1, which runs
%% in a helper process so this server keeps collecting the next group. An
%% idle log therefore syncs a lone message at once, and a busy one puts as
%% many messages in each sync as arrived during the previous one.
%%
%% Callers are told twice: {wal_written, Ref} once their terms are in the log
%% (not yet synced) and {wal_synced, Ref, Result} after the sync. append/2 runs
%% a function in between, so a message can be routed and pushed to WebSockets
%% while the sync is still running; the 202 still waits for the sync. If the
%% node dies before it, the sender never got a 202 and retries with the same
%% id (at-least-once delivery; Django deduplicates by id).
%%
%% Log terms:
%%   {msg, Msg}          an accepted message
%%   {bcast, Broadcast}  an accepted broadcast (its recipients' message ids are
%%                       derived deterministically, see message_ids)
%%   {confirmed, Ids}    Django has settled these message ids
%%
%% The log is split into generations (wal.<N>.LOG). On start every generation
%% is read, whatever Django has not confirmed is rewritten into a fresh
%% generation, the old files are deleted, and (once per VM) the unconfirmed
%% messages are dispatched again. While running, a generation whose messages
%% are all confirmed is truncated (current) or deleted (older), so the log
%% does not grow without bound.
-module(message_wal).
-behaviour(gen_server).

-export([start_link/0, append/1, append/2, append_dispatch/1, confirmed/1, unconfirmed_count/0, read_dir/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(APPEND_TIMEOUT_MS, 15000).
-define(HOUSEKEEPING_MS, 1000).
-define(TRUNCATE_MIN_BYTES, 1048576).
-define(ROTATE_BYTES, 67108864).

%%====================================================================
%% API
%%====================================================================

%% @doc Log the terms and return once they are synced to disk.
-spec append([{msg, map()} | {bcast, map()}]) -> ok | {error, term()}.
append(Terms) ->
    case append(Terms, fun() -> ok end) of
        {ok, ok} -> ok;
        Error -> Error
    end.

%% @doc Like append/1, but runs OnWritten() in the caller as soon as the terms
%% are written, while the sync is still in progress, and returns its result
%% once the sync is done. OnWritten does not run when the write fails.
-spec append([{msg, map()} | {bcast, map()}], fun(() -> Result)) ->
          {ok, Result} | {error, term()}.
append(Terms, OnWritten) ->
    case whereis(?MODULE) of
        undefined ->
            {error, {wal_unavailable, noproc}};
        Pid ->
            Ref = erlang:monitor(process, Pid),
            Pid ! {append, self(), Ref, Terms, notify},
            await_written(Ref, OnWritten)
    end.

%% @doc Log accepted messages and route them, with one request to this
%% server: once the group holding them is written, this server hands them to
%% persistence and to the router shards (on the caller's behalf, one shard
%% message per group), then syncs. Returns once the sync is done and the
%% shards have routed them: {ok, Dropped} with the receivers' dropped counts
%% in order. On a failed write nothing is routed.
-spec append_dispatch([map()]) -> {ok, [non_neg_integer()]} | {error, term()}.
append_dispatch(Msgs) ->
    case whereis(?MODULE) of
        undefined ->
            {error, {wal_unavailable, noproc}};
        Pid ->
            Ref = erlang:monitor(process, Pid),
            Pid ! {append, self(), Ref, [{msg, M} || M <- Msgs], {dispatch, Msgs}},
            await_dispatched(Ref)
    end.

await_dispatched(Ref) ->
    case next_reply(Ref) of
        {synced, Result, Ticket} ->
            %% Routing was started before the sync: collect it even when the
            %% sync failed, so no reply is left behind in this mailbox.
            Drops = message_router:await_async(Ticket),
            case Result of
                ok -> {ok, Drops};
                Error -> Error
            end;
        {synced, Error} ->
            Error;
        written ->
            await_dispatched(Ref);
        {error, _} = Error ->
            Error
    end.

await_written(Ref, OnWritten) ->
    case next_reply(Ref) of
        written ->
            %% Wait for the sync even if OnWritten fails, so no reply is left
            %% behind in the caller's mailbox.
            Written = try {ok, OnWritten()} catch Class:Reason:Stack -> {Class, Reason, Stack} end,
            synced_result(Written, await_synced(Ref));
        {synced, Error} ->
            Error;
        {error, _} = Error ->
            Error
    end.

synced_result({ok, Written}, ok) -> {ok, Written};
synced_result({ok, _Written}, Error) -> Error;
synced_result({Class, Reason, Stack}, _Synced) -> erlang:raise(Class, Reason, Stack).

await_synced(Ref) ->
    case next_reply(Ref) of
        {synced, Result} -> Result;
        {error, _} = Error -> Error
    end.

%% The WAL's next word on one append: written, synced (with the routing ticket
%% in dispatch mode), or the WAL is gone / too slow. Monitors end with the append.
next_reply(Ref) ->
    receive
        {wal_written, Ref} ->
            written;
        {wal_synced, Ref, Result, Ticket} ->
            erlang:demonitor(Ref, [flush]),
            {synced, Result, Ticket};
        {wal_synced, Ref, Result} ->
            erlang:demonitor(Ref, [flush]),
            {synced, Result};
        {'DOWN', Ref, process, _, Reason} ->
            {error, {wal_unavailable, reason_tag(Reason)}}
    after ?APPEND_TIMEOUT_MS ->
        erlang:demonitor(Ref, [flush]),
        {error, {wal_unavailable, timeout}}
    end.

%% @doc Record that Django settled these ids (not synced: losing one only
%% causes a harmless re-send after a crash).
-spec confirmed([binary()]) -> ok.
confirmed([]) -> ok;
confirmed(Ids) -> gen_server:cast(?MODULE, {confirmed, Ids}).

-spec unconfirmed_count() -> non_neg_integer().
unconfirmed_count() ->
    gen_server:call(?MODULE, unconfirmed_count).

%% @doc What the log in Dir holds that Django has not confirmed:
%% {Messages in log order, [{Broadcast, ConfirmedRecipientIds}]}. Used at
%% start-up and by tests.
-spec read_dir(file:filename()) -> {[map()], [{map(), [binary()]}]}.
read_dir(Dir) ->
    {Msgs, Bcasts, Confirmed} = read_generations(generations(Dir), Dir),
    unconfirmed(Msgs, Bcasts, Confirmed).

%%====================================================================
%% gen_server
%%====================================================================

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

init([]) ->
    process_flag(trap_exit, true),
    Dir = messaging_config:get(data_dir),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    OldGens = generations(Dir),
    {Msgs, Bcasts} = read_dir(Dir),
    Gen = lists:max([0 | OldGens]) + 1,
    State0 = open_generation(Gen, base_state(Dir)),
    State1 = rewrite_unconfirmed(Msgs, Bcasts, State0),
    [delete_generation(Dir, G) || G <- OldGens],
    replay_once(Msgs, Bcasts),
    erlang:send_after(?HOUSEKEEPING_MS, self(), housekeeping),
    {ok, State1}.

handle_call(unconfirmed_count, _From, State = #{unconfirmed := Unconfirmed}) ->
    {reply, map_size(Unconfirmed), State};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast({confirmed, Ids}, State) ->
    {noreply, record_confirmed(Ids, State)};
handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info({append, Pid, Ref, Terms, Mode}, State = #{pending := Pending}) ->
    {noreply, maybe_flush(State#{pending := [{Pid, Ref, Terms, Mode} | Pending]})};
handle_info({'DOWN', SyncRef, process, _, Exit}, State = #{syncing := {SyncRef, Waiters}}) ->
    {noreply, sync_done(sync_result(Exit), Waiters, State)};
handle_info(housekeeping, State) ->
    erlang:send_after(?HOUSEKEEPING_MS, self(), housekeeping),
    {noreply, compact(State)};
handle_info(_Other, State) ->
    {noreply, State}.

%% Appends that were never written get an error; written ones are synced.
terminate(_Reason, State = #{gen := Gen, pending := Pending}) ->
    [Pid ! {wal_synced, Ref, {error, {wal_unavailable, shutdown}}} || {Pid, Ref, _, _} <- Pending],
    _ = write_confirmed(State),
    _ = disk_log:sync(log_name(Gen)),
    disk_log:close(log_name(Gen)).

%%====================================================================
%% Group commit
%%====================================================================

%% pending: appends not yet written, newest first: [{Pid, Ref, Terms, Mode}],
%%          Mode = notify (told {wal_written, Ref}) | {dispatch, Msgs}
%% syncing: undefined | {HelperMonitorRef, [{Pid, Ref, Ticket | none}]} for
%%          the running sync
%% confirmed: confirmation terms held back while a sync runs, newest first
base_state(Dir) ->
    #{dir => Dir, gen => 0, pending => [], syncing => undefined, confirmed => [],
      unconfirmed => #{}, gen_counts => #{}}.

%% Only one sync at a time: what arrives meanwhile forms the next group.
maybe_flush(State = #{syncing := undefined, pending := [_ | _]}) ->
    flush(State);
maybe_flush(State) ->
    State.

flush(State = #{pending := PendingRev}) ->
    Pending = lists:reverse(PendingRev),
    State1 = write_confirmed(State#{pending := []}),
    case log_terms(lists:append([Terms || {_, _, Terms, _} <- Pending]), State1) of
        {ok, State2} ->
            [Pid ! {wal_written, Ref} || {Pid, Ref, _, notify} <- Pending],
            start_sync(dispatch(Pending), State2);
        {error, Reason} ->
            [Pid ! {wal_synced, Ref, {error, Reason}} || {Pid, Ref, _, _} <- Pending],
            State1
    end.

%% Written messages go to persistence first (so a router crash cannot lose
%% an acknowledged message), then to the router shards, all in log order.
dispatch(Pending) ->
    case [{Pid, Msgs} || {Pid, _Ref, _, {dispatch, Msgs}} <- Pending] of
        [] ->
            [{Pid, Ref, none} || {Pid, Ref, _, _} <- Pending];
        Batches ->
            AllMsgs = lists:append([Msgs || {_, Msgs} <- Batches]),
            ok = message_persistence:enqueue_many(AllMsgs),
            count_accepted(AllMsgs),
            Tickets = message_router:route_async(Batches),
            attach_tickets(Pending, Tickets)
    end.

attach_tickets([{Pid, Ref, _, {dispatch, _}} | Pending], [Ticket | Tickets]) ->
    [{Pid, Ref, Ticket} | attach_tickets(Pending, Tickets)];
attach_tickets([{Pid, Ref, _, notify} | Pending], Tickets) ->
    [{Pid, Ref, none} | attach_tickets(Pending, Tickets)];
attach_tickets([], []) ->
    [].

%% One counter update per priority, not per message.
count_accepted(Msgs) ->
    {H, N, L} = lists:foldl(fun(#{priority := <<"high">>}, {H, N, L}) -> {H + 1, N, L};
                               (#{priority := <<"low">>}, {H, N, L}) -> {H, N, L + 1};
                               (_, {H, N, L}) -> {H, N + 1, L}
                            end, {0, 0, 0}, Msgs),
    stats_collector:count(accepted, high, H),
    stats_collector:count(accepted, normal, N),
    stats_collector:count(accepted, low, L).

log_terms(Terms, State = #{gen := Gen}) ->
    case disk_log:log_terms(log_name(Gen), Terms) of
        ok ->
            {ok, track(lists:append([term_ids(T) || T <- Terms]), State)};
        {error, Reason} ->
            logger:error("WAL write failed: ~p", [Reason]),
            {error, Reason}
    end.

%% The fsync runs in a helper so new appends keep queueing up meanwhile; the
%% helper's exit reason carries the result (a crash is a failed sync).
start_sync(Waiters, State = #{gen := Gen}) ->
    Log = log_name(Gen),
    {_Pid, MonRef} = spawn_monitor(fun() -> exit({sync_result, disk_log:sync(Log)}) end),
    State#{syncing := {MonRef, Waiters}}.

sync_result({sync_result, Result}) -> Result;
sync_result(Crash) -> {error, {sync_failed, Crash}}.

sync_done(Result, Waiters, State) ->
    [notify_synced(Waiter, Result) || Waiter <- Waiters],
    next_group(State#{syncing := undefined}).

notify_synced({Pid, Ref, none}, Result) -> Pid ! {wal_synced, Ref, Result};
notify_synced({Pid, Ref, Ticket}, Result) -> Pid ! {wal_synced, Ref, Result, Ticket}.

%% Confirmations held back during the sync go out with the next group, or
%% on their own when nothing else is waiting.
next_group(State = #{pending := [_ | _]}) ->
    flush(State);
next_group(State) ->
    write_confirmed(State).

%%====================================================================
%% Confirmation tracking and compaction
%%====================================================================

term_ids({msg, #{id := Id}}) -> [Id];
term_ids({bcast, B}) -> broadcast_ids(B);
term_ids(_) -> [].

broadcast_ids(#{id := Bid, user_ids := UserIds}) ->
    [message_ids:derived_uuid(Bid, U) || U <- UserIds].

%% Put one id at a time: merging into a map of every unconfirmed id would
%% cost time in proportion to the whole map on each write.
track(Ids, State = #{gen := Gen, unconfirmed := Unconfirmed, gen_counts := Counts}) ->
    {Unconfirmed1, Added} = lists:foldl(fun(Id, {Map, N}) ->
                                                case maps:is_key(Id, Map) of
                                                    true -> {Map, N};
                                                    false -> {Map#{Id => Gen}, N + 1}
                                                end
                                        end, {Unconfirmed, 0}, Ids),
    State#{unconfirmed := Unconfirmed1,
           gen_counts := maps:update_with(Gen, fun(C) -> C + Added end, Added, Counts)}.

%% While a sync runs the log is busy; the confirmation is written with the
%% next group (or right away when the log is idle).
record_confirmed(Ids, State = #{confirmed := Held}) ->
    State1 = lists:foldl(fun untrack/2, State#{confirmed := [{confirmed, Ids} | Held]}, Ids),
    case State1 of
        #{syncing := undefined} -> write_confirmed(State1);
        _ -> State1
    end.

write_confirmed(State = #{confirmed := []}) ->
    State;
write_confirmed(State = #{gen := Gen, confirmed := Held}) ->
    _ = disk_log:log_terms(log_name(Gen), lists:reverse(Held)),
    State#{confirmed := []}.

untrack(Id, State = #{unconfirmed := Unconfirmed, gen_counts := Counts}) ->
    case maps:take(Id, Unconfirmed) of
        {IdGen, Rest} ->
            State#{unconfirmed := Rest,
                   gen_counts := maps:update_with(IdGen, fun(C) -> C - 1 end, Counts)};
        error ->
            State
    end.

%% Older generations with nothing left to confirm are deleted; the current
%% one is truncated when everything in it is confirmed, or rotated once big.
compact(State = #{gen := Gen, gen_counts := Counts, dir := Dir}) ->
    Done = [G || {G, 0} <- maps:to_list(Counts), G =/= Gen],
    [delete_generation(Dir, G) || G <- Done],
    State1 = State#{gen_counts := maps:without(Done, Counts)},
    compact_current(filelib:file_size(log_file(Dir, Gen)), State1).

compact_current(Bytes, State = #{gen := Gen, gen_counts := Counts, pending := [],
                                  syncing := undefined, confirmed := []})
  when Bytes > ?TRUNCATE_MIN_BYTES ->
    case maps:get(Gen, Counts, 0) of
        0 ->
            ok = disk_log:truncate(log_name(Gen)),
            State;
        _ when Bytes > ?ROTATE_BYTES ->
            _ = disk_log:close(log_name(Gen)),
            open_generation(Gen + 1, State);
        _ ->
            State
    end;
compact_current(_Bytes, State) ->
    State.

%%====================================================================
%% Generations on disk
%%====================================================================

log_name(Gen) -> {?MODULE, Gen}.

log_file(Dir, Gen) -> filename:join(Dir, "wal." ++ integer_to_list(Gen) ++ ".LOG").

generations(Dir) ->
    Files = filelib:wildcard("wal.*.LOG", Dir),
    lists:sort([list_to_integer(N) || F <- Files,
                                      [_, N, _] <- [string:split(F, ".", all)],
                                      is_digits(N)]).

is_digits(S) -> S =/= "" andalso lists:all(fun(C) -> C >= $0 andalso C =< $9 end, S).

open_generation(Gen, State = #{dir := Dir, gen_counts := Counts}) ->
    {ok, _} = open_log(log_name(Gen), log_file(Dir, Gen)),
    State#{gen := Gen, gen_counts := Counts#{Gen => maps:get(Gen, Counts, 0)}}.

open_log(Name, File) ->
    case disk_log:open([{name, Name}, {file, File}, {type, halt}, {format, internal},
                        {repair, true}]) of
        {ok, Name} -> {ok, Name};
        {repaired, Name, Recovered, BadBytes} ->
            logger:warning("WAL ~s repaired: ~p terms recovered, ~p bad bytes",
                           [File, Recovered, BadBytes]),
            {ok, Name};
        Error ->
            Error
    end.

delete_generation(Dir, Gen) ->
    _ = disk_log:close(log_name(Gen)),
    _ = disk_log:close({read, Gen}),
    file:delete(log_file(Dir, Gen)).

%% Keeps a message's first position in the log; a retried id is skipped.
read_generations(Gens, Dir) ->
    lists:foldl(fun(Gen, Acc) -> read_generation(Dir, Gen, Acc) end,
                {[], [], sets:new([{version, 2}])}, Gens).

read_generation(Dir, Gen, Acc) ->
    Name = {read, Gen},
    {ok, Name} = open_log(Name, log_file(Dir, Gen)),
    Result = read_chunks(Name, start, Acc),
    _ = disk_log:close(Name),
    Result.

read_chunks(Name, Cont, Acc) ->
    case disk_log:chunk(Name, Cont) of
        eof -> Acc;
        {error, Reason} ->
            logger:error("WAL read stopped: ~p", [Reason]),
            Acc;
        {Cont2, Terms} -> read_chunks(Name, Cont2, lists:foldl(fun collect/2, Acc, Terms));
        {Cont2, Terms, _BadBytes} -> read_chunks(Name, Cont2, lists:foldl(fun collect/2, Acc, Terms))
    end.

collect({msg, Msg}, {Msgs, Bcasts, Confirmed}) -> {[Msg | Msgs], Bcasts, Confirmed};
collect({bcast, B}, {Msgs, Bcasts, Confirmed}) -> {Msgs, [B | Bcasts], Confirmed};
collect({confirmed, Ids}, {Msgs, Bcasts, Confirmed}) ->
    {Msgs, Bcasts, sets:union(Confirmed, sets:from_list(Ids, [{version, 2}]))};
collect(_Unknown, Acc) -> Acc.

unconfirmed(MsgsRev, BcastsRev, Confirmed) ->
    Msgs = dedup([M || M = #{id := Id} <- lists:reverse(MsgsRev),
                       not sets:is_element(Id, Confirmed)]),
    Bcasts = [{B, [Id || Id <- broadcast_ids(B), sets:is_element(Id, Confirmed)]}
              || B <- dedup(lists:reverse(BcastsRev))],
    Open = [{B, Done} || {B = #{user_ids := Users}, Done} <- Bcasts, length(Done) < length(Users)],
    {Msgs, Open}.

dedup(Items) ->
    {Kept, _} = lists:foldl(fun(Item = #{id := Id}, {Acc, Seen}) ->
                                    case sets:is_element(Id, Seen) of
                                        true -> {Acc, Seen};
                                        false -> {[Item | Acc], sets:add_element(Id, Seen)}
                                    end
                            end, {[], sets:new([{version, 2}])}, Items),
    lists:reverse(Kept).

%% The fresh generation gets everything still open, then one sync, before
%% the old files are deleted, so a crash in between loses nothing.
rewrite_unconfirmed(Msgs, Bcasts, State = #{gen := Gen}) ->
    Terms = [{msg, M} || M <- Msgs]
        ++ lists:append([[{bcast, B}, {confirmed, Done}] || {B, Done} <- Bcasts]),
    ok = disk_log:log_terms(log_name(Gen), Terms),
    ok = disk_log:sync(log_name(Gen)),
    State1 = track(lists:append([term_ids(T) || T <- Terms]), State),
    lists:foldl(fun({_B, Done}, S) -> lists:foldl(fun untrack/2, S, Done) end, State1, Bcasts).

%% Replay into persistence and queues only once per VM: when this process is
%% merely restarted after a crash, the pending rows are still in ETS.
replay_once(Msgs, Bcasts) ->
    case ets:insert_new(messaging_state, {wal_replayed, true}) of
        true ->
            logger:notice("WAL replay: ~p messages, ~p broadcasts", [length(Msgs), length(Bcasts)]),
            message_ids:remember([Id || #{id := Id} <- Msgs]),
            message_router:dispatch_many(Msgs),
            [message_broadcast:resume(B, Done) || {B, Done} <- Bcasts],
            ok;
        false ->
            ok
    end.

reason_tag({Tag, _}) -> Tag;
reason_tag(Other) -> Other.
