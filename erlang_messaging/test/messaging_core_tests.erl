%% Unit tests and PropEr model tests for the pure parts of the service
%% (bounded_queue, priority_sched, validation, token check, ids) and the ETS
%% queue implementation checked against the bounded_queue model.
-module(messaging_core_tests).
-include_lib("proper/include/proper.hrl").
-include_lib("eunit/include/eunit.hrl").

-define(PROPER_OPTS, [{numtests, 300}, {to_file, user}]).

%%====================================================================
%% bounded_queue
%%====================================================================

bounded_queue_drops_oldest_test() ->
    Q0 = bounded_queue:new(2),
    {0, Q1} = bounded_queue:push({a, 1}, Q0),
    {0, Q2} = bounded_queue:push({b, 2}, Q1),
    {1, Q3} = bounded_queue:push({c, 3}, Q2),
    ?assertEqual([{b, 2}, {c, 3}], bounded_queue:to_list(Q3)),
    ?assertEqual(1, bounded_queue:dropped(Q3)),
    {1, Q4} = bounded_queue:ack([b, zzz], Q3),
    ?assertEqual([{c, 3}], bounded_queue:to_list(Q4)),
    ?assertEqual(1, bounded_queue:len(Q4)).

%%====================================================================
%% priority_sched
%%====================================================================

priority_high_overtakes_low_backlog_test() ->
    S0 = lists:foldl(fun(I, S) -> priority_sched:in(low, I, S) end, priority_sched:new(),
                     lists:seq(1, 100)),
    S1 = priority_sched:in(high, urgent, S0),
    {{value, high, urgent}, _} = priority_sched:out(S1).

priority_low_progresses_test() ->
    S0 = lists:foldl(fun(I, S) -> priority_sched:in(high, I, S) end, priority_sched:new(),
                     lists:seq(1, 100)),
    S1 = priority_sched:in(low, late, S0),
    Out = drain(S1),
    ?assert(index_of({low, late}, Out) =< 12).

%%====================================================================
%% Validation, auth, ids
%%====================================================================

validation_defaults_test() ->
    {ok, M} = message_validation:message(#{<<"sender_id">> => 1, <<"receiver_id">> => 2,
                                           <<"text">> => <<"x">>}),
    ?assertEqual(#{conversation_id => null, sender_id => 1, receiver_id => 2, text => <<"x">>,
                   priority => <<"normal">>}, M).

validation_errors_test() ->
    {error, F} = message_validation:message(#{<<"sender_id">> => -1, <<"text">> => 3,
                                              <<"priority">> => <<"urgent">>,
                                              <<"id">> => <<"nope">>,
                                              <<"conversation_id">> => <<"7">>}),
    ?assertEqual(lists:sort([<<"sender_id">>, <<"receiver_id">>, <<"text">>, <<"priority">>,
                             <<"id">>, <<"conversation_id">>]), lists:sort(maps:keys(F))),
    ?assertMatch({error, _}, message_validation:message([1])),
    ?assertMatch({error, _}, message_validation:ack_ids(#{<<"ids">> => [1]})).

validation_broadcast_test() ->
    {ok, B} = message_validation:broadcast(#{<<"sender_id">> => 1, <<"user_ids">> => [3, 2, 3],
                                             <<"text">> => <<"x">>, <<"id">> => <<"b-1">>}),
    ?assertEqual([3, 2], maps:get(user_ids, B)),
    ?assertMatch({error, #{<<"id">> := _}},
                 message_validation:broadcast(#{<<"sender_id">> => 1, <<"user_ids">> => [],
                                                <<"text">> => <<"x">>, <<"id">> => <<"a/b">>})).

token_compare_test() ->
    ?assert(messaging_auth:token_ok("secret", <<"secret">>)),
    ?assert(messaging_auth:token_ok(<<"secret">>, <<"secret">>)),
    ?assertNot(messaging_auth:token_ok("secreT", <<"secret">>)),
    ?assertNot(messaging_auth:token_ok("", <<"secret">>)),
    ?assertNot(messaging_auth:token_ok(undefined, <<"secret">>)),
    ?assertNot(messaging_auth:token_ok("longer-than-the-secret", <<"secret">>)).

uuid_test() ->
    Id = message_ids:new_uuid(),
    ?assert(message_ids:is_uuid(Id)),
    ?assertEqual(message_ids:derived_uuid(<<"b">>, 7), message_ids:derived_uuid(<<"b">>, 7)),
    ?assertNotEqual(message_ids:derived_uuid(<<"b">>, 7), message_ids:derived_uuid(<<"b">>, 8)),
    ?assert(message_ids:is_uuid(message_ids:derived_uuid(<<"b">>, 7))),
    ?assertNot(message_ids:is_uuid(<<"not-a-uuid">>)).

%%====================================================================
%% PropEr: the bounded queue model
%%====================================================================

bounded_queue_proper_test_() ->
    {timeout, 120, ?_assert(proper:quickcheck(prop_bounded_queue(), ?PROPER_OPTS))}.

queue_manager_matches_model_test_() ->
    {setup, fun setup_tables/0, fun cleanup_tables/1,
     {timeout, 120, ?_assert(proper:quickcheck(prop_queue_manager_matches_model(), ?PROPER_OPTS))}}.

priority_proper_test_() ->
    {timeout, 120, ?_assert(proper:quickcheck(prop_priority_order(), ?PROPER_OPTS))}.

priority_batch_proper_test_() ->
    {timeout, 120, ?_assert(proper:quickcheck(prop_priority_batches_match_single(), ?PROPER_OPTS))}.

op() ->
    frequency([{5, {push, range(1, 60)}}, {1, {ack, list(range(1, 60))}}]).

%% FIFO, bounded, oldest dropped first, drops counted.
prop_bounded_queue() ->
    ?FORALL({Max, Ops}, {range(1, 8), list(op())},
            begin
                {Q, Model, Drops} = lists:foldl(fun(Op, Acc) -> apply_op(Op, Acc) end,
                                                {bounded_queue:new(Max), [], 0}, numbered(Ops)),
                bounded_queue:to_list(Q) =:= Model
                    andalso bounded_queue:len(Q) =< Max
                    andalso bounded_queue:dropped(Q) =:= Drops
            end).

%% Each push gets a unique id (its position) so acks are unambiguous.
numbered(Ops) ->
    lists:zipwith(fun(N, {push, _}) -> {push, N}; (_N, Ack) -> Ack end,
                  lists:seq(1, length(Ops)), Ops).

apply_op({push, N}, {Q, Model, Drops}) ->
    {Dropped, Q1} = bounded_queue:push({N, N}, Q),
    Max = bounded_queue:max(Q),
    Model1 = Model ++ [{N, N}],
    %% The model drops the oldest entry itself; the queue must report the
    %% same drop (a mismatch makes the final comparison fail).
    case length(Model1) > Max of
        true -> {Q1, tl(Model1), Drops + 1 + (1 - Dropped)};
        false -> {Q1, Model1, Drops + Dropped}
    end;
apply_op({ack, Ids}, {Q, Model, Drops}) ->
    {_Removed, Q1} = bounded_queue:ack(Ids, Q),
    {Q1, [E || E = {Id, _} <- Model, not lists:member(Id, Ids)], Drops}.

%% The ETS implementation behaves exactly like the pure model.
prop_queue_manager_matches_model() ->
    ?FORALL({Max, Ops}, {range(1, 8), list(op())},
            begin
                message_queue_manager:clear_all(),
                persistent_term:put({message_queue_manager, max}, Max),
                User = 7,
                Final = lists:foldl(
                          fun({push, N}, {Q, Ok}) ->
                                  Id = integer_to_binary(N),
                                  {D, Q1} = bounded_queue:push({Id, N}, Q),
                                  {ok, D2} = message_queue_manager:push(User, #{id => Id, n => N}),
                                  {Q1, Ok andalso D =:= D2};
                             ({ack, Ns}, {Q, Ok}) ->
                                  Ids = [integer_to_binary(N) || N <- Ns],
                                  {R, Q1} = bounded_queue:ack(lists:usort(Ids), Q),
                                  {ok, R2} = message_queue_manager:ack(User, lists:usort(Ids)),
                                  {Q1, Ok andalso R =:= R2}
                          end, {bounded_queue:new(Max), true}, numbered(Ops)),
                {Q, SameCounts} = Final,
                SameCounts
                    andalso [Id || #{id := Id} <- message_queue_manager:peek(User)]
                            =:= [Id || {Id, _} <- bounded_queue:to_list(Q)]
                    andalso message_queue_manager:dropped(User) =:= bounded_queue:dropped(Q)
                    andalso message_queue_manager:depth(User) =:= bounded_queue:len(Q)
            end).

setup_tables() ->
    ok = messaging_tables:create().

cleanup_tables(_) ->
    persistent_term:erase({message_queue_manager, max}),
    ok.

%% Everything comes out once, FIFO per priority; a high message waits behind
%% at most one low per 8 highs; the j-th low is out by turn 12*j.
prop_priority_order() ->
    ?FORALL(Items, list({oneof([high, normal, low]), nat()}),
            begin
                Tagged = lists:zip(lists:seq(1, length(Items)), Items),
                S = lists:foldl(fun({I, {P, _}}, Acc) -> priority_sched:in(P, I, Acc) end,
                                priority_sched:new(), Tagged),
                Out = drain(S),
                all_out_fifo(Tagged, Out) andalso high_not_starved(Out) andalso low_progresses(Out)
            end).

%% The router's batched calls (in_many/3 per priority, out_many/2 chunks) give
%% exactly the order of in/3 and out/1 one at a time, interleaved with more
%% arrivals, so the ordering properties above hold for the router as well.
prop_priority_batches_match_single() ->
    ?FORALL(Steps, list({list({oneof([high, normal, low]), nat()}), range(0, 20)}),
            begin
                {_, _, SameOut} =
                    lists:foldl(fun({Items, N}, {Single, Batched, Ok}) ->
                                        S1 = lists:foldl(fun({P, I}, S) -> priority_sched:in(P, I, S) end,
                                                         Single, Items),
                                        B1 = lists:foldl(fun(P, B) ->
                                                                 priority_sched:in_many(P, [I || {Q, I} <- Items, Q =:= P], B)
                                                         end, Batched, [high, normal, low]),
                                        {OutS, S2} = out_n(N, S1, []),
                                        {OutB, B2} = priority_sched:out_many(N, B1),
                                        {S2, B2, Ok andalso OutS =:= OutB}
                                end, {priority_sched:new(), priority_sched:new(), true}, Steps),
                SameOut
            end).

out_n(0, S, Acc) ->
    {lists:reverse(Acc), S};
out_n(N, S, Acc) ->
    case priority_sched:out(S) of
        {empty, S1} -> {lists:reverse(Acc), S1};
        {{value, P, I}, S1} -> out_n(N - 1, S1, [{P, I} | Acc])
    end.

all_out_fifo(Tagged, Out) ->
    lists:all(fun(P) ->
                      [I || {I, {Q, _}} <- Tagged, Q =:= P] =:= [I || {Q, I} <- Out, Q =:= P]
              end, [high, normal, low]).

high_not_starved(Out) ->
    {_, _, Ok} = lists:foldl(fun({high, _}, {Highs, Lows, Ok}) ->
                                     K = Highs + 1,
                                     {K, Lows, Ok andalso Lows =< (K - 1) div 8 + 1};
                                ({low, _}, {Highs, Lows, Ok}) -> {Highs, Lows + 1, Ok};
                                (_, Acc) -> Acc
                             end, {0, 0, true}, Out),
    Ok.

low_progresses(Out) ->
    Positions = [Pos || {Pos, {low, _}} <- lists:zip(lists:seq(1, length(Out)), Out)],
    lists:all(fun({J, Pos}) -> Pos =< 12 * J end,
              lists:zip(lists:seq(1, length(Positions)), Positions)).

drain(S) ->
    case priority_sched:out(S) of
        {empty, _} -> [];
        {{value, P, Item}, S1} -> [{P, Item} | drain(S1)]
    end.

index_of(X, L) -> index_of(X, L, 1).
index_of(X, [X | _], N) -> N;
index_of(X, [_ | T], N) -> index_of(X, T, N + 1).
