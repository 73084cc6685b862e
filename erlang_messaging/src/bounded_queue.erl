%% Pure bounded FIFO with drop-oldest overflow. It is the executable
%% specification of a user's queue: message_queue_manager implements the same
%% behaviour on shared ETS rows (so state survives crashes and pushes do not
%% copy whole queues), and the PropEr suite checks both against each other.
-module(bounded_queue).

-export([new/1, push/2, ack/2, to_list/1, len/1, dropped/1, max/1]).
-export_type([t/0]).

-record(bq, {max :: pos_integer(),
             items = queue:new() :: queue:queue({term(), term()}),
             len = 0 :: non_neg_integer(),
             dropped = 0 :: non_neg_integer()}).
-opaque t() :: #bq{}.

-spec new(pos_integer()) -> t().
new(Max) when is_integer(Max), Max > 0 ->
    #bq{max = Max}.

%% @doc Append {Id, Item}; returns how many old items were dropped (0 or 1).
-spec push({term(), term()}, t()) -> {non_neg_integer(), t()}.
push(Entry, Q = #bq{items = Items, len = Len, max = Max}) when Len < Max ->
    {0, Q#bq{items = queue:in(Entry, Items), len = Len + 1}};
push(Entry, Q = #bq{items = Items, dropped = Dropped}) ->
    {{value, _Oldest}, Rest} = queue:out(Items),
    {1, Q#bq{items = queue:in(Entry, Rest), dropped = Dropped + 1}}.

%% @doc Remove the entries whose id is in Ids; returns how many were removed.
-spec ack([term()], t()) -> {non_neg_integer(), t()}.
ack(Ids, Q = #bq{items = Items, len = Len}) ->
    Remove = sets:from_list(Ids, [{version, 2}]),
    Kept = queue:filter(fun({Id, _}) -> not sets:is_element(Id, Remove) end, Items),
    NewLen = queue:len(Kept),
    {Len - NewLen, Q#bq{items = Kept, len = NewLen}}.

%% @doc Entries oldest first.
-spec to_list(t()) -> [{term(), term()}].
to_list(#bq{items = Items}) -> queue:to_list(Items).

-spec len(t()) -> non_neg_integer().
len(#bq{len = Len}) -> Len.

-spec dropped(t()) -> non_neg_integer().
dropped(#bq{dropped = Dropped}) -> Dropped.

-spec max(t()) -> pos_integer().
max(#bq{max = Max}) -> Max.
