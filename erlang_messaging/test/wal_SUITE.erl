%% The write-ahead log's bound (see the header of message_wal): half a
%% million messages go through a node over POST /messages/batch while a fake
%% Django confirms them, and the log's files never exceed the documented
%% bound and end at one small generation; a message Django never confirms is
%% carried forward instead of pinning its generation, and is still replayed
%% after a restart.
-module(wal_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([bound_holds_for_half_a_million_messages/1,
         never_confirmed_message_does_not_pin_a_generation/1,
         confirmations_outlive_the_generation_holding_them/1,
         carried_broadcast_keeps_its_confirmed_recipients/1]).

%% The volume run: small generations so many rotate, and a backlog limit
%% (MAX_PENDING: the service answers 503 above it) so the test can state the
%% bound as a constant too.
-define(TOTAL, 500000).
-define(BATCH, 500).
-define(SENDERS, 4).
-define(ROTATE_BYTES, 1048576).
-define(TRUNCATE_MIN_BYTES, 65536).
-define(MAX_PENDING, 20000).
-define(PERSIST_BATCH, 500).
%% message_wal's ?GEN_SLACK_BYTES: a generation's header and close marker.
-define(GEN_SLACK_BYTES, 16).
-define(SAMPLE_MS, 50).
-define(STUCK_CONVERSATION, 99).

all() ->
    [bound_holds_for_half_a_million_messages, never_confirmed_message_does_not_pin_a_generation,
     confirmations_outlive_the_generation_holding_them, carried_broadcast_keeps_its_confirmed_recipients].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(inets),
    {ok, _} = application:ensure_all_started(mochiweb),
    {ok, _} = wal_fake_django:start(),
    Config.

end_per_suite(_Config) ->
    wal_fake_django:stop().

init_per_testcase(Case, Config) ->
    wal_fake_django:reset(),
    Dir = filename:join(?config(priv_dir, Config), atom_to_list(Case)),
    [{wal_dir, Dir} | Config].

end_per_testcase(_Case, _Config) ->
    stop_app().

%%====================================================================
%% Cases
%%====================================================================

bound_holds_for_half_a_million_messages(Config) ->
    Dir = ?config(wal_dir, Config),
    Port = start_app(Dir, [{wal_rotate_bytes, ?ROTATE_BYTES},
                           {wal_truncate_min_bytes, ?TRUNCATE_MIN_BYTES},
                           {max_pending, ?MAX_PENDING}, {persist_batch_size, ?PERSIST_BATCH}]),
    Sampler = spawn_link(fun() -> sample(Dir, #{}) end),
    T0 = erlang:monotonic_time(millisecond),
    Overloaded = send_volume(Port),
    T1 = erlang:monotonic_time(millisecond),
    ok = wal_test_util:wait_until(fun() -> wal_fake_django:stored_count() >= ?TOTAL end, 120000),
    ok = wal_test_util:wait_until(fun() -> message_wal:unconfirmed_count() =:= 0 end, 30000),
    T2 = erlang:monotonic_time(millisecond),
    Sampler ! {stop, self()},
    Peaks = receive {samples, Sampler, P} -> P after 30000 -> ct:fail(sampler_timeout) end,
    Final = message_wal:stats(),
    Constant = constant_bound(),
    ct:pal("~p messages: accepted in ~.1f s (~p msg/s), all confirmed by Django after ~.1f s "
           "(~p msg/s end to end); ~p batches refused as overloaded and retried~n"
           "WAL bytes: peak ~p (file system, sampled every ~p ms), peak at rest ~p, final ~p "
           "in ~p generation(s)~n"
           "at rest: largest write W = ~p, largest unconfirmed U = ~p bytes (~p ids), "
           "most generations ~p, carried forward ~p bytes~n"
           "bound 2*(max(R, W) + 16) + 2*U checked at ~p rest points, worst margin ~p bytes; "
           "constant bound for this run ~p bytes (R = ~p, truncate_min = ~p)",
           [?TOTAL, (T1 - T0) / 1000, ?TOTAL * 1000 div max(1, T1 - T0), (T2 - T0) / 1000,
            ?TOTAL * 1000 div max(1, T2 - T0), Overloaded,
            maps:get(peak_fs, Peaks), ?SAMPLE_MS, maps:get(peak_disk, Peaks),
            maps:get(disk_bytes, Final), maps:get(generations, Final),
            maps:get(peak_w, Peaks), maps:get(peak_u, Peaks), maps:get(peak_ids, Peaks),
            maps:get(peak_gens, Peaks), maps:get(carried_bytes, Final),
            maps:get(samples, Peaks), maps:get(min_margin, Peaks), Constant,
            ?ROTATE_BYTES, ?TRUNCATE_MIN_BYTES]),
    ?assertEqual(?TOTAL, wal_fake_django:stored_count()),
    %% At every rest point sampled, the documented bound held for that moment's W and U.
    ?assertEqual([], maps:get(violations, Peaks)),
    ?assert(maps:get(samples, Peaks) > 10),
    %% Measured from outside at any moment, the files never outgrew the bound
    %% for the largest write and backlog this run can have.
    ?assert(maps:get(peak_fs, Peaks) =< Constant, {maps:get(peak_fs, Peaks), Constant}),
    %% Everything confirmed: one fresh generation, no bigger than the
    %% threshold at which a confirmed generation is renewed.
    ?assertEqual(0, maps:get(unconfirmed, Final)),
    ?assertEqual(1, maps:get(generations, Final)),
    ?assert(maps:get(disk_bytes, Final) =< ?TRUNCATE_MIN_BYTES + ?GEN_SLACK_BYTES, Final),
    ?assertEqual(maps:get(disk_bytes, Final), wal_test_util:wal_bytes(Dir)).

never_confirmed_message_does_not_pin_a_generation(Config) ->
    Dir = ?config(wal_dir, Config),
    %% About 480 messages a generation, in batches of 100, so the stuck
    %% messages share their generation with hundreds Django confirms.
    Rotate = 131072,
    Port = start_app(Dir, [{wal_rotate_bytes, Rotate}]),
    wal_fake_django:never_confirm(?STUCK_CONVERSATION),
    Stuck = [wal_test_util:uuid(1, N) || N <- lists:seq(1, 3)],
    First = [wal_test_util:message(Id, ?STUCK_CONVERSATION, 7, <<"never confirmed">>) || Id <- Stuck]
        ++ batch(2, 0, 97),
    Confirmed0 = wal_test_util:send_all(Port, First) -- Stuck,
    [FirstGen] = wal_test_util:generations(Dir),
    Confirmed = Confirmed0 ++ lists:append([wal_test_util:send_all(Port, batch(2, B * 100, 100))
                                            || B <- lists:seq(1, 100)]),
    ok = wal_test_util:wait_until(fun() -> lists:all(fun wal_fake_django:stored/1, Confirmed) end, 30000),
    ok = wal_test_util:wait_until(fun() -> message_wal:unconfirmed_count() =:= 3 end, 30000),
    Stats = message_wal:stats(),
    Gens = wal_test_util:generations(Dir),
    ct:pal("never-confirmed: first generation ~p, now ~p; ~p", [FirstGen, Gens, Stats]),
    %% The stuck messages' generation is gone, the log is a few generations
    %% long, and the stuck messages cost what they weigh.
    ?assert(lists:min(Gens) > FirstGen, Gens),
    ?assert(lists:max(Gens) > FirstGen + 4, Gens),
    ?assert(length(Gens) =< 3, Gens),
    ?assert(maps:get(carried_bytes, Stats) > 0, Stats),
    ?assert(maps:get(disk_bytes, Stats) =< maps:get(bound_bytes, Stats), Stats),
    ?assert(maps:get(disk_bytes, Stats) =< 2 * (Rotate + ?GEN_SLACK_BYTES) + 2 * maps:get(unconfirmed_bytes, Stats)),
    %% Still in the log: a restart replays them (and nothing Django confirmed).
    stop_app(),
    wal_fake_django:reset_arrivals(),
    _ = start_app(Dir, [{wal_rotate_bytes, Rotate}]),
    ok = wal_test_util:wait_until(fun() -> lists:all(fun(Id) -> wal_fake_django:arrivals(Id) > 0 end, Stuck) end,
                                  30000),
    ?assertEqual([], [Id || Id <- Confirmed, wal_fake_django:arrivals(Id) > 0]).

%% A generation kept because most of it is unconfirmed, whose other
%% messages Django confirmed only after it rotated: their confirmations sit
%% in the next generation. When that one is retired, they must be written
%% again first, or a restart would send those messages once more.
confirmations_outlive_the_generation_holding_them(Config) ->
    Dir = ?config(wal_dir, Config),
    %% About 240 messages a generation.
    Overrides = [{wal_rotate_bytes, 65536}],
    Port = start_app(Dir, Overrides),
    wal_fake_django:never_confirm(?STUCK_CONVERSATION),
    wal_fake_django:set_mode(fail),
    Stuck = wal_test_util:send_all(Port, [wal_test_util:message(wal_test_util:uuid(4, N), ?STUCK_CONVERSATION,
                                                                 7, <<"the write-ahead log keeps this until Django has it">>)
                                          || N <- lists:seq(1, 150)]),
    Late = wal_test_util:send_all(Port, batch(5, 0, 20)),
    Next = wal_test_util:send_all(Port, batch(5, 20, 150)),
    ?assertEqual([1, 2], wal_test_util:generations(Dir)),
    wal_fake_django:set_mode(ok),
    ok = wait_confirmed(Late ++ Next, length(Stuck)),
    More = wal_test_util:send_all(Port, batch(5, 170, 150)),
    ok = wait_confirmed(More, length(Stuck)),
    %% Generation 2, which held the late confirmations, is gone; 1 stays.
    ?assertEqual([1, 3], wal_test_util:generations(Dir)),
    stop_app(),
    wal_fake_django:reset_arrivals(),
    _ = start_app(Dir, Overrides),
    ok = wal_test_util:wait_until(fun() -> lists:all(fun(Id) -> wal_fake_django:arrivals(Id) > 0 end, Stuck) end,
                                  30000),
    ?assertEqual([], [Id || Id <- Late ++ Next ++ More, wal_fake_django:arrivals(Id) > 0]).

%% A broadcast one recipient of which Django never confirms is carried
%% forward with the list of recipients it did confirm: after a restart only
%% that one recipient's message is sent again.
carried_broadcast_keeps_its_confirmed_recipients(Config) ->
    Dir = ?config(wal_dir, Config),
    Overrides = [{wal_rotate_bytes, 65536}],
    Port = start_app(Dir, Overrides),
    Holdout = 4242,
    wal_fake_django:never_confirm(<<"receiver_id">>, Holdout),
    Users = [Holdout | lists:seq(1, 99)],
    {202, #{<<"broadcast_id">> := Bid}} =
        wal_test_util:post(Port, "/broadcast", #{sender_id => 1, user_ids => Users, text => <<"to everyone">>}),
    [HoldoutId | Delivered] = [message_ids:derived_uuid(Bid, U) || U <- Users],
    [FirstGen] = wal_test_util:generations(Dir),
    ok = wait_confirmed(Delivered, 1),
    Traffic = lists:append([wal_test_util:send_all(Port, batch(6, B * 100, 100)) || B <- lists:seq(0, 19)]),
    ok = wait_confirmed(Traffic, 1),
    Stats = message_wal:stats(),
    ?assert(lists:min(wal_test_util:generations(Dir)) > FirstGen, wal_test_util:generations(Dir)),
    ?assert(maps:get(carried_bytes, Stats) > 0, Stats),
    stop_app(),
    wal_fake_django:reset_arrivals(),
    _ = start_app(Dir, Overrides),
    ok = wal_test_util:wait_until(fun() -> wal_fake_django:arrivals(HoldoutId) > 0 end, 30000),
    ?assertEqual([], [Id || Id <- Delivered ++ Traffic, wal_fake_django:arrivals(Id) > 0]).

wait_confirmed(Ids, Left) ->
    wal_test_util:wait_until(fun() ->
                                     lists:all(fun wal_fake_django:stored/1, Ids) andalso
                                         message_wal:unconfirmed_count() =:= Left
                             end, 30000).

%%====================================================================
%% Volume
%%====================================================================

%% ?SENDERS clients post batches of ?BATCH until ?TOTAL messages are in;
%% a batch refused as overloaded (503) is posted again. Returns how many
%% were refused.
send_volume(Port) ->
    Self = self(),
    PerSender = ?TOTAL div ?SENDERS,
    Senders = [spawn_link(fun() -> Self ! {sent, self(), send_range(Port, S * PerSender, PerSender, 0)} end)
               || S <- lists:seq(0, ?SENDERS - 1)],
    lists:sum([receive {sent, Pid, Refused} -> Refused after 300000 -> ct:fail(sender_timeout) end
               || Pid <- Senders]).

send_range(_Port, _First, 0, Refused) ->
    Refused;
send_range(Port, First, Left, Refused) ->
    N = min(?BATCH, Left),
    send_range(Port, First + N, Left - N, Refused + post_until_accepted(Port, batch(3, First, N), 0)).

post_until_accepted(Port, Msgs, Refused) ->
    case wal_test_util:post_batch(Port, Msgs) of
        {202, #{<<"results">> := Results}} when length(Results) =:= length(Msgs) ->
            Refused;
        {503, #{<<"error">> := #{<<"code">> := <<"overloaded">>}}} ->
            timer:sleep(20),
            post_until_accepted(Port, Msgs, Refused + 1);
        Other ->
            ct:fail({batch_refused, Other})
    end.

%% N messages of run Run from number First, spread over conversations and
%% receivers (each receiver's queue is bounded, so memory stays flat).
batch(Run, First, N) ->
    [wal_test_util:message(wal_test_util:uuid(Run, I), 1 + I rem 50, 1000 + I rem 64,
                           <<"the write-ahead log keeps this until Django has it">>)
     || I <- lists:seq(First, First + N - 1)].

%% Every ?SAMPLE_MS: the log's size from the file system (any moment) and
%% message_wal:stats/0 (answered at a rest point, where the bound is checked
%% against that moment's W and U).
sample(Dir, Acc0) ->
    Acc = sample_once(Dir, Acc0),
    receive
        {stop, From} -> From ! {samples, self(), Acc}
    after ?SAMPLE_MS ->
        sample(Dir, Acc)
    end.

sample_once(Dir, Acc) ->
    Fs = wal_test_util:wal_bytes(Dir),
    #{disk_bytes := Disk, largest_write_bytes := W, unconfirmed_bytes := U, unconfirmed := Ids,
      rotate_bytes := R, generations := Gens} = message_wal:stats(),
    Bound = 2 * (max(R, W) + ?GEN_SLACK_BYTES) + 2 * U,
    Violations = [{Disk, Bound, W, U} || Disk > Bound],
    #{peak_fs => max(Fs, maps:get(peak_fs, Acc, 0)),
      peak_disk => max(Disk, maps:get(peak_disk, Acc, 0)),
      peak_w => max(W, maps:get(peak_w, Acc, 0)),
      peak_u => max(U, maps:get(peak_u, Acc, 0)),
      peak_ids => max(Ids, maps:get(peak_ids, Acc, 0)),
      peak_gens => max(Gens, maps:get(peak_gens, Acc, 0)),
      min_margin => min(Bound - Disk, maps:get(min_margin, Acc, Bound - Disk)),
      samples => maps:get(samples, Acc, 0) + 1,
      violations => Violations ++ maps:get(violations, Acc, [])}.

%% The bound with this run's largest possible W and U. A group commit holds
%% at most one batch per sender; the backlog is at most MAX_PENDING plus
%% what the senders had in flight when it was checked, plus the batches
%% Django confirmed whose confirmation the log has not taken yet. Between
%% rest points max(W, U) is added (a group being synced, or a carry-forward
%% in progress), and the header of a generation a carry may open.
constant_bound() ->
    Item = term_bytes(),
    W = ?SENDERS * ?BATCH * Item,
    U = (?MAX_PENDING + ?SENDERS * ?BATCH + 2 * ?PERSIST_BATCH) * Item,
    2 * (max(?ROTATE_BYTES, W) + ?GEN_SLACK_BYTES) + 2 * U + max(W, U) + ?GEN_SLACK_BYTES.

%% The largest this run's messages get in the log: the term as the service
%% stores it (fields as validated, plus id, created_at and broadcast_id),
%% with disk_log's 8-byte item header and room for bigger integers.
term_bytes() ->
    Msg = #{id => wal_test_util:uuid(3, ?TOTAL), conversation_id => 50, sender_id => 1,
            receiver_id => 1063, text => <<"the write-ahead log keeps this until Django has it">>,
            priority => <<"normal">>, created_at => <<"2025-01-01T00:00:00.000Z">>,
            broadcast_id => null},
    byte_size(term_to_binary({msg, Msg})) + 8 + 16.

%%====================================================================
%% The service in this VM
%%====================================================================

start_app(Dir, Overrides) ->
    _ = application:stop(messaging_service),
    application:load(messaging_service),
    Port = wal_test_util:free_port(),
    [application:set_env(messaging_service, K, V) || {K, V} <- wal_test_util:settings(Port, Dir, Overrides)],
    {ok, _} = application:ensure_all_started(messaging_service),
    Port.

stop_app() ->
    _ = application:stop(messaging_service),
    [application:unset_env(messaging_service, K) || {K, _} <- application:get_all_env(messaging_service)],
    ok.
