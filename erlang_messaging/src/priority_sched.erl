%% Pure weighted scheduler over three FIFO queues (high, normal, low).
%% A fixed cycle of 12 slots gives 8 turns to high, 3 to normal and 1 to low;
%% an empty queue's turn passes to the next slot. So a backlog of low traffic
%% can delay a high message by at most one low item per 8 highs, and low
%% still gets at least 1 in 12 turns when everything is busy.
-module(priority_sched).

-export([new/0, in/3, in_many/3, out/1, out_many/2, len/1, len/2, priorities/0, cycle/0]).
-export_type([t/0, priority/0]).

-type priority() :: high | normal | low.
-record(sched, {high = queue:new() :: queue:queue(),
                normal = queue:new() :: queue:queue(),
                low = queue:new() :: queue:queue(),
                len = 0 :: non_neg_integer(),
                slot = 0 :: non_neg_integer()}).
-opaque t() :: #sched{}.

-define(CYCLE, {high, high, normal, high, high, normal, high, high, normal, high, high, low}).
-define(CYCLE_LEN, 12).

-spec new() -> t().
new() -> #sched{}.

-spec priorities() -> [priority()].
priorities() -> [high, normal, low].

%% @doc The slot pattern (for tests and docs).
-spec cycle() -> [priority()].
cycle() -> tuple_to_list(?CYCLE).

-spec in(priority(), term(), t()) -> t().
in(Prio, Item, S = #sched{len = Len}) ->
    set_queue(Prio, queue:in(Item, queue_of(Prio, S)), S#sched{len = Len + 1}).

%% @doc in/3 for a list of items of one priority, in list order.
-spec in_many(priority(), [term()], t()) -> t().
in_many(_Prio, [], S) ->
    S;
in_many(Prio, Items, S = #sched{len = Len}) ->
    Q = queue:join(queue_of(Prio, S), queue:from_list(Items)),
    set_queue(Prio, Q, S#sched{len = Len + length(Items)}).

%% @doc Up to N items exactly as N calls of out/1 would return them:
%% {[{Priority, Item}], Rest}. When only one queue holds items they are split
%% off at once and the cycle position is advanced as out/1 would have.
-spec out_many(non_neg_integer(), t()) -> {[{priority(), term()}], t()}.
out_many(N, S) ->
    case nonempty(S) of
        [Prio] -> out_single(Prio, N, S);
        _ -> out_each(N, S, [])
    end.

out_single(Prio, N, S = #sched{slot = Slot, len = Len}) ->
    Q = queue_of(Prio, S),
    Take = min(N, queue:len(Q)),
    {Front, Rest} = queue:split(Take, Q),
    Out = [{Prio, Item} || Item <- queue:to_list(Front)],
    {Out, set_queue(Prio, Rest, S#sched{slot = advance(Slot, Prio, Take), len = Len - Take})}.

%% The slot after the Count-th turn of Prio from Slot on. After the first
%% turn, each whole cycle of Prio's turns comes back to the same slot, so only
%% the remainder is walked.
advance(Slot, _Prio, 0) ->
    Slot;
advance(Slot, Prio, Count) ->
    walk(walk(Slot, Prio, 1), Prio, (Count - 1) rem turns(Prio)).

turns(high) -> 8;
turns(normal) -> 3;
turns(low) -> 1.

walk(Slot, _Prio, 0) ->
    Slot;
walk(Slot, Prio, Count) ->
    Next = (Slot + 1) rem ?CYCLE_LEN,
    case element(Slot + 1, ?CYCLE) of
        Prio -> walk(Next, Prio, Count - 1);
        _ -> walk(Next, Prio, Count)
    end.

out_each(0, S, Acc) ->
    {lists:reverse(Acc), S};
out_each(N, S, Acc) ->
    case out(S) of
        {{value, Prio, Item}, Rest} -> out_each(N - 1, Rest, [{Prio, Item} | Acc]);
        {empty, Rest} -> {lists:reverse(Acc), Rest}
    end.

nonempty(S) ->
    [P || P <- [high, normal, low], not queue:is_empty(queue_of(P, S))].

%% @doc Next item by the weighted cycle, or empty.
-spec out(t()) -> {{value, priority(), term()}, t()} | {empty, t()}.
out(S = #sched{len = 0}) ->
    {empty, S};
out(S = #sched{slot = Slot, len = Len}) ->
    {Prio, Taken} = next_nonempty(Slot, S),
    {{value, Item}, Rest} = queue:out(queue_of(Prio, S)),
    {{value, Prio, Item}, set_queue(Prio, Rest, S#sched{slot = (Taken + 1) rem ?CYCLE_LEN,
                                                          len = Len - 1})}.

%% The first slot from Slot on whose queue has an item (there is one, since
%% len > 0); an empty queue's turn passes on without rebuilding the record.
next_nonempty(Slot, S) ->
    Prio = element(Slot + 1, ?CYCLE),
    case queue:is_empty(queue_of(Prio, S)) of
        false -> {Prio, Slot};
        true -> next_nonempty((Slot + 1) rem ?CYCLE_LEN, S)
    end.

-spec len(t()) -> non_neg_integer().
len(#sched{len = Len}) -> Len.

-spec len(priority(), t()) -> non_neg_integer().
len(Prio, S) -> queue:len(queue_of(Prio, S)).

queue_of(high, #sched{high = Q}) -> Q;
queue_of(normal, #sched{normal = Q}) -> Q;
queue_of(low, #sched{low = Q}) -> Q.

set_queue(high, Q, S) -> S#sched{high = Q};
set_queue(normal, Q, S) -> S#sched{normal = Q};
set_queue(low, Q, S) -> S#sched{low = Q}.
