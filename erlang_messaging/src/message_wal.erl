%% Write-ahead log (disk_log). An HTTP request is answered 202 only after its
%% message is in the log *and* disk_log:sync/1 has run. Syncs are grouped:
%% callers block until the next sync, which runs when WAL_SYNC_BATCH terms are
%% waiting or WAL_SYNC_DELAY_MS after the first of them, so one fsync covers
%% many messages.
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

-export([start_link/0, append/1, confirmed/1, unconfirmed_count/0, read_dir/1]).
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
    try gen_server:call(?MODULE, {append, Terms}, ?APPEND_TIMEOUT_MS)
    catch exit:Reason -> {error, {wal_unavailable, reason_tag(Reason)}}
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

handle_call({append, Terms}, From, State) ->
    case log_terms(Terms, State) of
        {ok, State1} -> {noreply, maybe_sync(State1#{waiters := [From | maps:get(waiters, State1)]})};
        {error, Reason} -> {reply, {error, Reason}, State}
    end;
handle_call(unconfirmed_count, _From, State = #{unconfirmed := Unconfirmed}) ->
    {reply, map_size(Unconfirmed), State};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast({confirmed, Ids}, State) ->
    {noreply, record_confirmed(Ids, State)};
handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(sync, State) ->
    {noreply, sync_now(State#{timer := undefined})};
handle_info(housekeeping, State) ->
    erlang:send_after(?HOUSEKEEPING_MS, self(), housekeeping),
    {noreply, compact(State)};
handle_info(_Other, State) ->
    {noreply, State}.

terminate(_Reason, State) ->
    _ = sync_now(State),
    disk_log:close(log_name(maps:get(gen, State))).

%%====================================================================
%% Group commit
%%====================================================================

base_state(Dir) ->
    #{dir => Dir, gen => 0, waiters => [], unsynced => 0, timer => undefined,
      unconfirmed => #{}, gen_counts => #{},
      sync_batch => messaging_config:get(wal_sync_batch),
      sync_delay => messaging_config:get(wal_sync_delay_ms)}.

log_terms(Terms, State = #{gen := Gen, unsynced := Unsynced}) ->
    case disk_log:log_terms(log_name(Gen), Terms) of
        ok ->
            Tracked = track(lists:append([term_ids(T) || T <- Terms]), State),
            {ok, Tracked#{unsynced := Unsynced + length(Terms)}};
        {error, Reason} ->
            logger:error("WAL write failed: ~p", [Reason]),
            {error, Reason}
    end.

maybe_sync(State = #{unsynced := Unsynced, sync_batch := Batch}) when Unsynced >= Batch ->
    sync_now(State);
maybe_sync(State = #{timer := undefined, sync_delay := Delay}) ->
    State#{timer := erlang:send_after(Delay, self(), sync)};
maybe_sync(State) ->
    State.

sync_now(State = #{waiters := [], unsynced := 0}) ->
    State;
sync_now(State = #{gen := Gen, waiters := Waiters, timer := Timer}) ->
    cancel(Timer),
    Result = disk_log:sync(log_name(Gen)),
    [gen_server:reply(W, Result) || W <- Waiters],
    State#{waiters := [], unsynced := 0, timer := undefined}.

cancel(undefined) -> ok;
cancel(Timer) -> erlang:cancel_timer(Timer).

%%====================================================================
%% Confirmation tracking and compaction
%%====================================================================

term_ids({msg, #{id := Id}}) -> [Id];
term_ids({bcast, B}) -> broadcast_ids(B);
term_ids(_) -> [].

broadcast_ids(#{id := Bid, user_ids := UserIds}) ->
    [message_ids:derived_uuid(Bid, U) || U <- UserIds].

track(Ids, State = #{gen := Gen, unconfirmed := Unconfirmed, gen_counts := Counts}) ->
    New = [Id || Id <- Ids, not maps:is_key(Id, Unconfirmed)],
    State#{unconfirmed := maps:merge(Unconfirmed, maps:from_list([{Id, Gen} || Id <- New])),
           gen_counts := maps:update_with(Gen, fun(C) -> C + length(New) end, length(New), Counts)}.

record_confirmed(Ids, State = #{gen := Gen}) ->
    _ = disk_log:log(log_name(Gen), {confirmed, Ids}),
    lists:foldl(fun untrack/2, State, Ids).

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

compact_current(Bytes, State = #{gen := Gen, gen_counts := Counts, waiters := [], unsynced := 0})
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
            [message_router:dispatch(M) || M <- Msgs],
            [message_broadcast:resume(B, Done) || {B, Done} <- Bcasts],
            ok;
        false ->
            ok
    end.

reason_tag({Tag, _}) -> Tag;
reason_tag(Other) -> Other.
