%% Write-ahead log (disk_log). An HTTP request is answered 202 only after its
%% message is in the log *and* disk_log:sync/1 has run.
%%
%% Group commit without a timer: appends that arrive while a sync is running
%% wait in memory; as soon as that sync is done they are written with one
%% disk_log write and synced together by one disk_log:sync/1, which runs in a
%% helper process so this server keeps collecting the next group. An idle log
%% therefore syncs a lone message at once, and a busy one puts as many
%% messages in each sync as arrived during the previous one.
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
%% Generations. The log is a series of files wal.<N>.LOG; appends go to the
%% newest (the current generation). Before a write that would take a
%% generation already holding terms past wal_rotate_bytes (R), the current
%% one is synced and closed and the next is opened. For every unconfirmed id
%% this server knows its generation and its share of the bytes ("live"
%% bytes; a broadcast's bytes are shared among its recipients). Whenever the
%% log is at rest (no sync in flight: after every sync, after a confirmation
%% while idle, and every second) it compacts, oldest generation first:
%%   - an older generation with nothing unconfirmed left is retired (deleted);
%%   - an older generation two or more behind the current one (so it has had
%%     a whole generation of traffic to get confirmed) whose live bytes are
%%     at most half its file is carried forward: what is still unconfirmed
%%     is read back and rewritten into the current generation, synced, and
%%     only then is the old file retired. One never-confirmed message
%%     therefore costs its own bytes, not a generation;
%%   - the current generation, once everything in it is confirmed and it is
%%     larger than wal_truncate_min_bytes, is rotated and the old one retired.
%% A confirmation written into a newer generation than its message's ("late")
%% is rewritten into the current generation, and synced, before that newer
%% generation is retired while the message's generation is still on disk, so
%% deleting a file never brings a confirmed message back.
%%
%% The bound. Let R = wal_rotate_bytes, W = the largest single write (one
%% group commit; carried terms and confirmations are written in pieces of at
%% most ?WRITE_CHUNK_BYTES), U = the live bytes (unconfirmed_bytes in
%% stats/0). Whenever the log is at rest its files total at most
%%     2 * (max(R, W) + ?GEN_SLACK_BYTES) + 2 * U
%% because the current and the previous generation are each at most
%% max(R, W) plus disk_log's header, and every older one is kept only while
%% more than half of it is live. With no backlog (U = 0) that is two
%% generations; in production (R = 16 MiB, groups far below it) 32 MiB + 2U.
%% At any other moment add at most max(W, U): the group being synced, or the
%% terms a carry-forward has rewritten but whose old generation it has not
%% yet deleted.
%% Carrying costs at most one read of a generation and a rewrite of at most
%% half of it; while a backlog drains, each generation can be carried once.
%% A generation whose carry-forward failed (a disk error, logged) is left
%% out of the bound until Django has confirmed what it holds.
%%
%% Crash safety. A message leaves the disk only by the retirement of its
%% generation, after a sync of everything that still needs it (carried
%% terms, late confirmations). kill -9 at any moment therefore loses no
%% acknowledged, unconfirmed message; it may replay (send Django again, which
%% deduplicates by id) a message Django had confirmed only if that
%% confirmation was not yet on disk: confirmations are not synced on their
%% own, they reach the disk with the next sync, rotation, or disk_log's flush
%% within about two seconds. On start every readable generation is read,
%% whatever is unconfirmed is rewritten into fresh generations and synced,
%% the old files are deleted, and (once per VM) the unconfirmed messages are
%% dispatched again. A generation file disk_log cannot open (a crash while
%% it was being created leaves it empty) is deleted when it is too small to
%% hold a term, otherwise renamed to wal.<N>.LOG.unreadable for an operator.
%%
%% Crash points, for tests only: with the application env wal_pause_at set
%% to one of the points below, the server writes the marker file
%% wal_paused.<point> into its data dir when it reaches that point and
%% blocks there, so a test can kill -9 the node at exactly that moment.
%% Unset (production) each check is one application env lookup per write.
%%   mid_append        a group's terms are written, not synced, no 202 sent
%%   mid_rotation      carrying forward: the first piece of carried terms is
%%                     written, the rest is not, the old generation remains
%%   mid_confirmation  {confirmed, Ids} is written (not synced), the
%%                     generations it frees are not yet retired
-module(message_wal).
-behaviour(gen_server).

-export([start_link/0, append/1, append/2, append_dispatch/1, confirmed/1, unconfirmed_count/0,
         stats/0, disk_bytes/0, read_dir/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(APPEND_TIMEOUT_MS, 15000).
-define(HOUSEKEEPING_MS, 1000).
%% Production defaults; the application env keys wal_rotate_bytes and
%% wal_truncate_min_bytes override them (tests use small generations). A
%% carry-forward reads a whole generation while appends wait, so R is kept
%% to what reads in about a tenth of a second.
-define(ROTATE_BYTES, 16777216).
-define(TRUNCATE_MIN_BYTES, 1048576).
%% Carried terms and start-up rewrites are written in pieces of about this size.
-define(WRITE_CHUNK_BYTES, 65536).
%% disk_log's internal format: an 8-byte file header, 8 bytes in front of each
%% item, 24 in front of items of ?MD5_ITEM_BYTES or more (they carry an MD5).
-define(FILE_HEADER_BYTES, 8).
-define(ITEM_HEADER_BYTES, 8).
-define(MD5_ITEM_BYTES, 65528).
-define(MD5_ITEM_HEADER_BYTES, 24).
%% A generation's header, plus what disk_log adds when it closes the file.
-define(GEN_SLACK_BYTES, 16).
-define(PAUSE_MARKER, "wal_paused.").

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

%% @doc The log's size and what bounds it, taken when the log is next at rest
%% (so the bound in the module header holds for the figures returned):
%% disk_bytes (the generation files' sizes on disk), generations,
%% unconfirmed (ids), unconfirmed_bytes (U), largest_write_bytes (W),
%% rotate_bytes (R), bound_bytes, carried_bytes (rewritten by carry-forward
%% since start).
-spec stats() -> #{atom() => non_neg_integer()}.
stats() ->
    gen_server:call(?MODULE, stats, 2 * ?APPEND_TIMEOUT_MS).

%% @doc Total size of the generation files in the configured data dir, read
%% from the file system without asking the server (cheap; for metrics).
-spec disk_bytes() -> non_neg_integer().
disk_bytes() ->
    disk_bytes(messaging_config:get(data_dir)).

%% @doc What the log in Dir holds that Django has not confirmed:
%% {Messages in log order, [{Broadcast, ConfirmedRecipientIds}]}. Used at
%% start-up and by tests. Generations disk_log cannot open are skipped.
-spec read_dir(file:filename()) -> {[map()], [{map(), [binary()]}]}.
read_dir(Dir) ->
    {{Msgs, Bcasts, Confirmed}, _Unreadable} = read_generations(generations(Dir), Dir),
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
    {{MsgsRev, BcastsRev, Confirmed}, Unreadable} = read_generations(OldGens, Dir),
    set_aside(Dir, Unreadable),
    {Msgs, Bcasts} = unconfirmed(MsgsRev, BcastsRev, Confirmed),
    State0 = open_generation(lists:max([0 | OldGens]) + 1, base_state(Dir)),
    State1 = rewrite_recovered(Msgs, Bcasts, State0),
    [delete_file(Dir, G) || G <- OldGens -- Unreadable],
    replay_once(Msgs, Bcasts),
    erlang:send_after(?HOUSEKEEPING_MS, self(), housekeeping),
    {ok, State1}.

handle_call(unconfirmed_count, _From, State = #{unconfirmed := Unconfirmed}) ->
    {reply, map_size(Unconfirmed), State};
handle_call(stats, _From, State = #{syncing := undefined}) ->
    {reply, stats_of(State), State};
handle_call(stats, From, State = #{stats_waiters := Waiting}) ->
    {noreply, State#{stats_waiters := [From | Waiting]}};
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
    case State of
        #{syncing := undefined} -> {noreply, at_rest(State)};
        _ -> {noreply, State}
    end;
handle_info(_Other, State) ->
    {noreply, State}.

%% Appends that were never written get an error; written ones are synced.
terminate(_Reason, State = #{pending := Pending}) ->
    [Pid ! {wal_synced, Ref, {error, {wal_unavailable, shutdown}}} || {Pid, Ref, _, _} <- Pending],
    #{gen := Gen} = write_confirmed(State),
    _ = disk_log:sync(log_name(Gen)),
    disk_log:close(log_name(Gen)).

%% pending: appends not yet written, newest first: [{Pid, Ref, Terms, Mode}],
%%          Mode = notify (told {wal_written, Ref}) | {dispatch, Msgs}
%% syncing: undefined (the log is at rest) | {HelperMonitorRef, [{Pid, Ref,
%%          Ticket | none}]} for the running sync
%% confirmed: settled ids not yet written, as [{Id, TheirGeneration}]
%% unconfirmed: Id => {Generation, LiveBytes}
%% gens: Generation => #{bytes (file size), live (bytes), count (ids)}
%% late: Generation => ids of it whose confirmation went into a newer one
%% no_carry: generations a carry-forward failed for (left to confirmation)
base_state(Dir) ->
    #{dir => Dir, gen => 0, pending => [], syncing => undefined, confirmed => [],
      unconfirmed => #{}, gens => #{}, late => #{}, no_carry => [],
      rotate_bytes => env(wal_rotate_bytes, ?ROTATE_BYTES),
      truncate_min_bytes => env(wal_truncate_min_bytes, ?TRUNCATE_MIN_BYTES),
      largest_write => 0, carried_bytes => 0, stats_waiters => []}.

env(Key, Default) ->
    application:get_env(messaging_service, Key, Default).

%%====================================================================
%% Group commit
%%====================================================================

%% Only one sync at a time: what arrives meanwhile forms the next group.
maybe_flush(State = #{syncing := undefined, pending := [_ | _]}) ->
    flush(State);
maybe_flush(State) ->
    State.

flush(State = #{pending := PendingRev}) ->
    Pending = lists:reverse(PendingRev),
    Encoded = lists:foldr(fun encode_term/2, {[], [], 0}, [T || {_, _, Terms, _} <- Pending, T <- Terms]),
    case write_encoded(Encoded, State#{pending := []}) of
        {ok, Gen, Shares, State1} ->
            crash_point(mid_append, State1),
            [Pid ! {wal_written, Ref} || {Pid, Ref, _, notify} <- Pending],
            start_sync(dispatch(Pending), track(Gen, Shares, State1));
        {error, Reason, State1} ->
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

%% The fsync runs in a helper so new appends keep queueing up meanwhile; the
%% helper's exit reason carries the result (a crash is a failed sync).
start_sync(Waiters, State = #{gen := Gen}) ->
    Log = log_name(Gen),
    {_Pid, MonRef} = spawn_monitor(fun() -> exit({sync_result, disk_log:sync(Log)}) end),
    State#{syncing := {MonRef, Waiters}}.

sync_result({sync_result, Result}) -> Result;
sync_result(Crash) -> {error, {sync_failed, Crash}}.

%% Between two syncs the log is at rest: compaction runs before the next
%% group is written.
sync_done(Result, Waiters, State) ->
    [notify_synced(Waiter, Result) || Waiter <- Waiters],
    maybe_flush(at_rest(State#{syncing := undefined})).

notify_synced({Pid, Ref, none}, Result) -> Pid ! {wal_synced, Ref, Result};
notify_synced({Pid, Ref, Ticket}, Result) -> Pid ! {wal_synced, Ref, Result, Ticket}.

%%====================================================================
%% Writing and tracking
%%====================================================================

%% An appended term, encoded into {Bins, Shares, Bytes}: a message is one
%% id owning all its bytes (the common case, in one pass); a broadcast is a
%% record whose recipients share them.
encode_term({msg, #{id := Id}} = Term, {Bins, Shares, Total}) ->
    Bin = term_to_binary(Term),
    Bytes = item_bytes(Bin),
    {[Bin | Bins], [{Id, Bytes} | Shares], Total + Bytes};
encode_term({bcast, B}, Acc) ->
    encode(broadcast_record(B, broadcast_ids(B), []), Acc).

%% A record: terms written together, and the ids that stay unconfirmed
%% while they are on disk (they share the record's bytes).
msg_record(Msg = #{id := Id}) -> {[{msg, Msg}], [Id]}.

%% A broadcast some of whose recipients Django already confirmed carries
%% that list along, so they are not sent again.
broadcast_record(B, Live, []) -> {[{bcast, B}], Live};
broadcast_record(B, Live, Done) -> {[{bcast, B}, {confirmed, Done}], Live}.

broadcast_ids(#{id := Bid, user_ids := UserIds}) ->
    [message_ids:derived_uuid(Bid, U) || U <- UserIds].

%% One disk_log write of the records; returns the generation written to and
%% each unconfirmed id's share of the bytes.
write_records(Records, State) ->
    write_encoded(lists:foldr(fun encode/2, {[], [], 0}, Records), State).

write_encoded({Bins, Shares, Bytes}, State) ->
    case write_bins(Bins, Bytes, State) of
        {ok, Gen, State1} -> {ok, Gen, Shares, State1};
        Error -> Error
    end.

%% Prepends the encoded record to {Bins, Shares, Bytes}.
encode({Terms, Ids}, {Bins, Shares, Total}) ->
    RecordBins = [term_to_binary(T) || T <- Terms],
    Bytes = bins_bytes(RecordBins),
    {RecordBins ++ Bins, shares(Bytes, Ids) ++ Shares, Total + Bytes}.

shares(_Bytes, []) ->
    [];
shares(Bytes, [First | Rest] = Ids) ->
    Each = Bytes div length(Ids),
    [{First, Bytes - Each * length(Rest)} | [{Id, Each} || Id <- Rest]].

bins_bytes(Bins) -> lists:sum([item_bytes(B) || B <- Bins]).

item_bytes(Bin) when byte_size(Bin) >= ?MD5_ITEM_BYTES -> byte_size(Bin) + ?MD5_ITEM_HEADER_BYTES;
item_bytes(Bin) -> byte_size(Bin) + ?ITEM_HEADER_BYTES.

%% Records in writes of about ?WRITE_CHUNK_BYTES each, their ids tracked in
%% the generation each write went to (start-up rewrite).
write_tracked(Records, State) ->
    write_pieces(Records, [], 0, State).

write_pieces([], Piece, _Bytes, State) ->
    write_piece(lists:reverse(Piece), State);
write_pieces([Record | Records], Piece, Bytes, State) ->
    Bytes1 = Bytes + erlang:external_size(Record),
    case Bytes1 >= ?WRITE_CHUNK_BYTES of
        true ->
            case write_piece(lists:reverse([Record | Piece]), State) of
                {ok, State1} -> write_pieces(Records, [], 0, State1);
                Error -> Error
            end;
        false ->
            write_pieces(Records, [Record | Piece], Bytes1, State)
    end.

write_piece(Records, State) ->
    case write_records(Records, State) of
        {ok, Gen, Shares, State1} -> {ok, track(Gen, Shares, State1)};
        Error -> Error
    end.

%% Appends to the current generation, rotating first when the write would
%% take a generation that already holds terms past rotate_bytes. Called only
%% with the log at rest.
write_bins([], _Bytes, State = #{gen := Gen}) ->
    {ok, Gen, State};
write_bins(Bins, Bytes, State0) ->
    State = #{gen := Gen} = make_room(Bytes, State0),
    case disk_log:blog_terms(log_name(Gen), Bins) of
        ok ->
            {ok, Gen, grown(Gen, Bytes, State)};
        {error, Reason} ->
            logger:error("WAL write failed: ~p", [Reason]),
            {error, Reason, State}
    end.

write_term(Term, State) ->
    Bin = term_to_binary(Term),
    write_bins([Bin], item_bytes(Bin), State).

make_room(Bytes, State = #{gen := Gen, gens := Gens, rotate_bytes := Max}) ->
    case Gens of
        #{Gen := #{bytes := Size}} when Size > ?FILE_HEADER_BYTES, Size + Bytes > Max ->
            rotate(State);
        _ ->
            State
    end.

grown(Gen, Bytes, State = #{gens := Gens, largest_write := Largest}) ->
    State#{gens := maps:update_with(Gen, fun(I = #{bytes := B}) -> I#{bytes := B + Bytes} end, Gens),
           largest_write := max(Largest, Bytes)}.

%% Put one id at a time: merging into a map of every unconfirmed id would
%% cost time in proportion to the whole map on each write. An id already
%% unconfirmed elsewhere (a client's retry) stays where it is.
track(Gen, Shares, State = #{unconfirmed := Unconfirmed, gens := Gens}) ->
    {Unconfirmed1, Bytes, Count} =
        lists:foldl(fun({Id, B}, {Map, Sum, N}) ->
                            case maps:is_key(Id, Map) of
                                true -> {Map, Sum, N};
                                false -> {Map#{Id => {Gen, B}}, Sum + B, N + 1}
                            end
                    end, {Unconfirmed, 0, 0}, Shares),
    State#{unconfirmed := Unconfirmed1, gens := add_live(Gen, Bytes, Count, Gens)}.

add_live(Gen, Bytes, Count, Gens) ->
    maps:update_with(Gen, fun(I = #{live := L, count := C}) -> I#{live := L + Bytes, count := C + Count} end,
                     Gens).

%%====================================================================
%% Confirmations
%%====================================================================

%% While a sync runs the log is busy; the confirmation is written at the
%% next rest point (right away when the log is idle). Ids this log does not
%% hold (already confirmed) are not written again.
record_confirmed(Ids, State = #{unconfirmed := Unconfirmed, gens := Gens, confirmed := Held}) ->
    {Unconfirmed1, Gens1, Held1} =
        lists:foldl(fun(Id, {Map, Gs, H}) ->
                            case maps:take(Id, Map) of
                                {{Gen, Bytes}, Map1} -> {Map1, add_live(Gen, -Bytes, -1, Gs), [{Id, Gen} | H]};
                                error -> {Map, Gs, H}
                            end
                    end, {Unconfirmed, Gens, Held}, Ids),
    State1 = State#{unconfirmed := Unconfirmed1, gens := Gens1, confirmed := Held1},
    case State1 of
        #{syncing := undefined} -> at_rest(State1);
        _ -> State1
    end.

write_confirmed(State = #{confirmed := []}) ->
    State;
write_confirmed(State = #{confirmed := Held}) ->
    Ids = [Id || {Id, _} <- Held],
    case write_term({confirmed, Ids}, State#{confirmed := []}) of
        {ok, Gen, State1} ->
            crash_point(mid_confirmation, State1),
            note_late(Held, Gen, State1);
        {error, Reason, State1} ->
            %% Only costs a re-send of these ids after a crash.
            logger:warning("WAL could not record ~p confirmations: ~p", [length(Ids), Reason]),
            State1
    end.

note_late(Held, Gen, State = #{late := Late, gens := Gens}) ->
    Late1 = lists:foldl(fun({Id, IdGen}, L) when IdGen < Gen, is_map_key(IdGen, Gens) ->
                                maps:update_with(IdGen, fun(Ids) -> [Id | Ids] end, [Id], L);
                           (_, L) ->
                                L
                        end, Late, Held),
    State#{late := Late1}.

%%====================================================================
%% Compaction (only with the log at rest)
%%====================================================================

%% Everything that needs the log at rest: held confirmations are written,
%% generations compacted, and stats/0 callers answered.
at_rest(State) ->
    reply_stats(compact(write_confirmed(State))).

compact(State) ->
    case next_step(State) of
        none ->
            State;
        Step ->
            case step(Step, State) of
                {ok, State1} ->
                    compact(State1);
                {error, Reason, State1} ->
                    logger:error("WAL compaction step ~p failed: ~p", [Step, Reason]),
                    State1
            end
    end.

%% Oldest first: retire what is fully confirmed, carry forward what is
%% mostly confirmed and at least two generations old, renew a fully
%% confirmed current generation once it is big enough to bother. The first
%% clause is the usual case, checked after every sync.
next_step(#{gen := Gen, gens := Gens, truncate_min_bytes := Min}) when map_size(Gens) =:= 1 ->
    case Gens of
        #{Gen := #{count := 0, bytes := Bytes}} when Bytes > Min -> renew;
        _ -> none
    end;
next_step(#{gen := Gen, gens := Gens, no_carry := NoCarry, truncate_min_bytes := Min}) ->
    Older = lists:sort([{G, Info} || {G, Info} <- maps:to_list(Gens), G < Gen]),
    Retire = [{retire, G} || {G, #{count := 0}} <- Older],
    Carry = [{carry, G} || {G, #{live := Live, bytes := Bytes}} <- Older,
                           G =< Gen - 2, 2 * Live =< Bytes, not lists:member(G, NoCarry)],
    Renew = [renew || #{count := 0, bytes := Bytes} <- [maps:get(Gen, Gens)], Bytes > Min],
    case Retire ++ Carry ++ Renew of
        [] -> none;
        [Step | _] -> Step
    end.

step({retire, G}, State) -> retire(G, State);
step({carry, G}, State) -> carry(G, State);
step(renew, State) -> {ok, rotate(State)}.

%% Syncs and closes the current generation and opens the next.
rotate(State = #{gen := Gen, dir := Dir, gens := Gens}) ->
    Log = log_name(Gen),
    _ = disk_log:sync(Log),
    _ = disk_log:close(Log),
    Closed = maps:update_with(Gen, fun(I) -> I#{bytes := filelib:file_size(log_file(Dir, Gen))} end,
                              Gens),
    open_generation(Gen + 1, State#{gens := Closed}).

%% Deletes generation G. It may hold late confirmations of older
%% generations still on disk: those are rewritten and synced first.
retire(G, State) ->
    case preserve_late(G, State) of
        {ok, State1 = #{dir := Dir, gens := Gens, late := Late, no_carry := NoCarry}} ->
            delete_file(Dir, G),
            {ok, State1#{gens := maps:remove(G, Gens), late := maps:remove(G, Late),
                         no_carry := lists:delete(G, NoCarry)}};
        Error ->
            Error
    end.

preserve_late(G, State = #{late := Late}) ->
    case [Id || {Older, Ids} <- lists:sort(maps:to_list(Late)), Older < G, Id <- Ids] of
        [] ->
            {ok, State};
        Ids ->
            case write_term({confirmed, Ids}, State) of
                {ok, Gen, State1} -> synced(Gen, State1);
                Error -> Error
            end
    end.

synced(Gen, State) ->
    case disk_log:sync(log_name(Gen)) of
        ok -> {ok, State};
        {error, Reason} -> {error, Reason, State}
    end.

%% Rewrites what generation G still holds unconfirmed into the current
%% generation, piece by piece as G is read (G is closed: it was rotated),
%% syncs, and only then moves the ids over and retires G.
carry(G, State = #{dir := Dir}) ->
    Name = {carry, G},
    case open_log(Name, log_file(Dir, G)) of
        {ok, Name} ->
            Result = carry_chunks(Name, start, G, {sets:new([{version, 2}]), []}, State),
            _ = disk_log:close(Name),
            finish_carry(G, Result);
        {error, Reason} ->
            {error, Reason, no_carry(G, State)}
    end.

carry_chunks(Name, Cont, G, Acc, State) ->
    case disk_log:chunk(Name, Cont) of
        eof -> {ok, element(2, Acc), State};
        {error, Reason} -> {error, Reason, State};
        {Cont1, Terms} -> carry_terms(Name, Cont1, G, Terms, Acc, State);
        {Cont1, Terms, _BadBytes} -> carry_terms(Name, Cont1, G, Terms, Acc, State)
    end.

carry_terms(Name, Cont, G, Terms, {Seen, Moved}, State = #{unconfirmed := Unconfirmed}) ->
    {Records, Seen1} = live_records(Terms, G, Unconfirmed, Seen),
    case write_records(Records, State) of
        {ok, _Gen, [], State1} ->
            carry_chunks(Name, Cont, G, {Seen1, Moved}, State1);
        {ok, Gen, Shares, State1} ->
            case Moved of
                [] -> crash_point(mid_rotation, State1);
                _ -> ok
            end,
            carry_chunks(Name, Cont, G, {Seen1, [{Gen, Shares} | Moved]}, State1);
        Error ->
            Error
    end.

%% The records of Terms whose ids are still unconfirmed in G, each once.
live_records(Terms, G, Unconfirmed, Seen) ->
    {Records, Seen1} =
        lists:foldl(fun(Term, {Acc, S}) ->
                            case live_record(Term, G, Unconfirmed) of
                                none -> {Acc, S};
                                {Key, Record} ->
                                    case sets:is_element(Key, S) of
                                        true -> {Acc, S};
                                        false -> {[Record | Acc], sets:add_element(Key, S)}
                                    end
                            end
                    end, {[], Seen}, Terms),
    {lists:reverse(Records), Seen1}.

live_record({msg, Msg = #{id := Id}}, G, Unconfirmed) ->
    case Unconfirmed of
        #{Id := {G, _}} -> {{msg, Id}, msg_record(Msg)};
        _ -> none
    end;
live_record({bcast, B = #{id := Bid}}, G, Unconfirmed) ->
    Ids = broadcast_ids(B),
    case [Id || Id <- Ids, is_map_key(Id, Unconfirmed), element(1, map_get(Id, Unconfirmed)) =:= G] of
        [] -> none;
        Live -> {{bcast, Bid}, broadcast_record(B, Live, [Id || Id <- Ids, not is_map_key(Id, Unconfirmed)])}
    end;
live_record(_Other, _G, _Unconfirmed) ->
    none.

finish_carry(G, {ok, Moved, State = #{gen := Gen}}) ->
    case synced(Gen, State) of
        {ok, State1} ->
            State2 = lists:foldl(fun({To, Shares}, S) -> move(G, To, Shares, S) end, State1,
                                 lists:reverse(Moved)),
            case State2 of
                #{gens := #{G := #{count := 0}}} -> retire(G, State2);
                _ -> {error, {unconfirmed_left_after_carry, G}, no_carry(G, State2)}
            end;
        {error, Reason, State1} ->
            {error, Reason, no_carry(G, State1)}
    end;
finish_carry(G, {error, Reason, State}) ->
    {error, Reason, no_carry(G, State)}.

move(From, To, Shares, State = #{unconfirmed := Unconfirmed, gens := Gens, carried_bytes := Carried}) ->
    {Unconfirmed1, Gens1, Bytes} =
        lists:foldl(fun({Id, B}, {Map, Gs, Sum}) ->
                            case Map of
                                #{Id := {From, Old}} ->
                                    {Map#{Id := {To, B}}, add_live(To, B, 1, add_live(From, -Old, -1, Gs)),
                                     Sum + B};
                                _ ->
                                    {Map, Gs, Sum}
                            end
                    end, {Unconfirmed, Gens, 0}, Shares),
    State#{unconfirmed := Unconfirmed1, gens := Gens1, carried_bytes := Carried + Bytes}.

no_carry(G, State = #{no_carry := NoCarry}) ->
    State#{no_carry := [G | lists:delete(G, NoCarry)]}.

%%====================================================================
%% Stats and the test hook
%%====================================================================

stats_of(#{dir := Dir, gens := Gens, unconfirmed := Unconfirmed, largest_write := Largest,
           rotate_bytes := Rotate, carried_bytes := Carried}) ->
    Live = lists:sum([L || #{live := L} <- maps:values(Gens)]),
    #{disk_bytes => disk_bytes(Dir), generations => map_size(Gens),
      unconfirmed => map_size(Unconfirmed), unconfirmed_bytes => Live,
      largest_write_bytes => Largest, rotate_bytes => Rotate,
      bound_bytes => 2 * (max(Rotate, Largest) + ?GEN_SLACK_BYTES) + 2 * Live,
      carried_bytes => Carried}.

reply_stats(State = #{stats_waiters := []}) ->
    State;
reply_stats(State = #{stats_waiters := Waiting}) ->
    Stats = stats_of(State),
    [gen_server:reply(From, Stats) || From <- Waiting],
    State#{stats_waiters := []}.

%% See "Crash points" in the module header: blocks for good at Point when the
%% application env wal_pause_at names it, after leaving a marker file.
crash_point(Point, #{dir := Dir}) ->
    case application:get_env(messaging_service, wal_pause_at) of
        {ok, Point} ->
            logger:notice("WAL paused at ~p (wal_pause_at is set)", [Point]),
            ok = file:write_file(filename:join(Dir, ?PAUSE_MARKER ++ atom_to_list(Point)), <<>>),
            receive after infinity -> ok end;
        _ ->
            ok
    end.

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

disk_bytes(Dir) ->
    lists:sum([filelib:file_size(log_file(Dir, G)) || G <- generations(Dir)]).

open_generation(Gen, State = #{dir := Dir, gens := Gens}) ->
    File = log_file(Dir, Gen),
    {ok, _} = open_log(log_name(Gen), File),
    State#{gen := Gen, gens := Gens#{Gen => #{bytes => filelib:file_size(File), live => 0, count => 0}}}.

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

delete_file(Dir, Gen) ->
    _ = disk_log:close(log_name(Gen)),
    file:delete(log_file(Dir, Gen)).

%% A generation disk_log cannot open holds nothing when it is no bigger than
%% a header (killed while being created); otherwise it is kept for an operator.
set_aside(Dir, Gens) ->
    [case filelib:file_size(File) =< ?GEN_SLACK_BYTES of
         true ->
             file:delete(File);
         false ->
             logger:error("WAL ~s is unreadable; renamed to ~s.unreadable", [File, File]),
             file:rename(File, File ++ ".unreadable")
     end || G <- Gens, File <- [log_file(Dir, G)]],
    ok.

%% Keeps a message's first position in the log; a retried id is skipped.
%% Returns what was read and the generations that could not be opened.
read_generations(Gens, Dir) ->
    lists:foldl(fun(Gen, {Acc, Unreadable}) ->
                        case read_generation(Dir, Gen, Acc) of
                            {ok, Acc1} -> {Acc1, Unreadable};
                            {error, Reason} ->
                                logger:error("WAL generation ~p unreadable: ~p", [Gen, Reason]),
                                {Acc, [Gen | Unreadable]}
                        end
                end, {{[], [], sets:new([{version, 2}])}, []}, Gens).

read_generation(Dir, Gen, Acc) ->
    Name = {read, Gen},
    case open_log(Name, log_file(Dir, Gen)) of
        {ok, Name} ->
            Result = read_chunks(Name, start, Acc),
            _ = disk_log:close(Name),
            {ok, Result};
        {error, Reason} ->
            {error, Reason}
    end.

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
rewrite_recovered(Msgs, Bcasts, State) ->
    Records = [msg_record(M) || M <- Msgs]
        ++ [broadcast_record(B, open_recipients(B, Done), Done) || {B, Done} <- Bcasts],
    {ok, State1 = #{gen := Gen}} = write_tracked(Records, State),
    ok = disk_log:sync(log_name(Gen)),
    State1.

open_recipients(B, Done) ->
    DoneSet = sets:from_list(Done, [{version, 2}]),
    [Id || Id <- broadcast_ids(B), not sets:is_element(Id, DoneSet)].

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
