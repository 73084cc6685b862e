%% Pure weighted scheduler over three FIFO queues (high, normal, low).
%% A fixed cycle of 12 slots gives 8 turns to high, 3 to normal and 1 to low;
%% an empty queue's turn passes to the next slot. So a backlog of low traffic
%% can delay a high message by at most one low item per 8 highs, and low
%% still gets at least 1 in 12 turns when everything is busy.
-module(priority_sched).

-export([new/0, in/3, out/1, len/1, len/2, priorities/0, cycle/0]).
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
