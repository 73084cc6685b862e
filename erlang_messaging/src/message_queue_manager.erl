%% Bounded per-user FIFO queues on shared ETS tables (owned by the supervisor).
%%
%% Each message is its own row keyed {UserId, Seq} in an ordered_set, so a push
%% never copies the user's whole queue and concurrent callers (router shards,
%% HTTP handlers, WebSocket sessions) work without a central process: sequence
%% numbers and counts are atomic ets:update_counter/4 calls and removals use
%% ets:take/2, so a row is removed by exactly one caller. Overflow drops the
%% oldest message. The semantics match the pure bounded_queue module.
%%
%% The process itself only does housekeeping: it publishes queue-depth totals
%% once a second and prunes the recently-seen id table. Killing it loses nothing.
-module(message_queue_manager).
-behaviour(gen_server).

-export([start_link/0, push/2, push_many/1, peek/1, ack/2, ack_messages/2, dropped/1, depth/1, depth_stats/0,
         clear_all/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(META, messaging_queue_meta).
-define(MAX_KEY, {?MODULE, max}).
-define(DEPTH_KEY, queue_depth).
-define(STATS_INTERVAL_MS, 1000).
-define(PRUNE_INTERVAL_MS, 10000).

%% Meta row positions: {UserId, NextSeq, Count, Dropped}
-define(SEQ_POS, 2).
-define(COUNT_POS, 3).
-define(DROPPED_POS, 4).

%%====================================================================
%% Queue operations (run in the caller)
%%====================================================================

%% @doc Append Msg (a map with an `id') to UserId's queue. Returns how many old
%% messages were dropped to stay within MESSAGE_QUEUE_MAX_SIZE.
-spec push(integer(), map()) -> {ok, non_neg_integer()}.
push(UserId, Msg) ->
    [Dropped] = push_many([{UserId, Msg}]),
    {ok, Dropped}.

%% @doc push/2 for a list of {UserId, Msg}, in order, with one ETS insert per
%% table for the whole list. Returns each message's dropped count. The result
%% is the same as pushing one by one: every row is in before the drops, and a
%% drop always takes the user's oldest row.
-spec push_many([{integer(), map()}]) -> [non_neg_integer()].
push_many(Entries) ->
    %% One counter update takes the sequence number and counts the row.
    Numbered = [{UserId, Msg, ets:update_counter(?META, UserId, [{?SEQ_POS, 1}, {?COUNT_POS, 1}],
                                                 {UserId, 0, 0, 0})}
                || {UserId, Msg} <- Entries],
    insert_rows([{UserId, {{UserId, Seq}, Msg}} || {UserId, Msg, [Seq, _]} <- Numbered]),
    Max = max_size(),
    [drop_excess(UserId, Count, Max) || {UserId, _Msg, [_, Count]} <- Numbered].

%% @doc UserId's queued messages, oldest first.
-spec peek(integer()) -> [map()].
peek(UserId) ->
    ets:select(items(UserId), [{{{UserId, '_'}, '$1'}, [], ['$1']}]).

%% @doc Remove the given message ids from UserId's queue; unknown ids are
%% ignored. Returns how many were removed.
-spec ack(integer(), [binary()]) -> {ok, non_neg_integer()}.
ack(UserId, Ids) ->
    {ok, length(ack_messages(UserId, Ids))}.

%% @doc Like ack/2 but returns the removed messages.
-spec ack_messages(integer(), [binary()]) -> [map()].
ack_messages(UserId, Ids) when is_list(Ids) ->
    Wanted = sets:from_list(Ids, [{version, 2}]),
    lists:append([remove_acked(UserId, Seq) || {Seq, Id} <- queued_ids(UserId),
                                               sets:is_element(Id, Wanted)]).

%% @doc How many of UserId's messages were dropped by overflow, ever.
-spec dropped(integer()) -> non_neg_integer().
dropped(UserId) ->
    meta_field(UserId, ?DROPPED_POS).

-spec depth(integer()) -> non_neg_integer().
depth(UserId) ->
    meta_field(UserId, ?COUNT_POS).

%% @doc #{total, users, max} as of the last housekeeping tick.
-spec depth_stats() -> #{total := non_neg_integer(), users := non_neg_integer(),
                         max := non_neg_integer()}.
depth_stats() ->
    case ets:lookup(messaging_state, ?DEPTH_KEY) of
        [{_, Stats}] -> Stats;
        [] -> compute_depth_stats()
    end.

%% @doc Empty every queue (tests and benchmarks).
clear_all() ->
    [ets:delete_all_objects(T) || T <- messaging_tables:all_queue_items()],
    ets:delete_all_objects(?META),
    ok.

%%====================================================================
%% Internals of the queue operations
%%====================================================================

%% Each push that takes the count over the bound removes exactly one row, so
%% concurrent pushes never over-drop. take/2 may lose a race with an ack; then
%% the next oldest row is tried.
drop_excess(UserId, Count, Max) when Count > Max ->
    case take_oldest(UserId) of
        {ok, _Msg} ->
            ets:update_counter(?META, UserId, [{?COUNT_POS, -1}, {?DROPPED_POS, 1}]),
            1;
        none ->
            0
    end;
drop_excess(_UserId, _Count, _Max) ->
    0.

take_oldest(UserId) ->
    Items = items(UserId),
    case ets:next(Items, {UserId, -1}) of
        Key = {UserId, _Seq} ->
            case ets:take(Items, Key) of
                [{_, Msg}] ->
                    {ok, Msg};
                [] ->
                    take_oldest(UserId)
            end;
        _OtherUserOrEnd ->
            none
    end.

%% {Seq, Id} of the user's rows: a range scan over at most the queue bound,
%% so no id index has to be written on every push.
queued_ids(UserId) ->
    ets:select(items(UserId), [{{{UserId, '$1'}, '$2'}, [], [{{'$1', {map_get, id, '$2'}}}]}]).

%% take/2 removes a row exactly once even when an ack races with a drop.
remove_acked(UserId, Seq) ->
    case ets:take(items(UserId), {UserId, Seq}) of
        [{_, Msg}] ->
            ets:update_counter(?META, UserId, {?COUNT_POS, -1}),
            [Msg];
        [] ->
            []
    end.

items(UserId) ->
    messaging_tables:queue_items(UserId).

%% One insert per table; a router shard's rows all go to the same one.
insert_rows([{FirstUser, _} | _] = Rows) ->
    Table = items(FirstUser),
    case lists:all(fun({UserId, _}) -> items(UserId) =:= Table end, Rows) of
        true -> true = ets:insert(Table, [Row || {_, Row} <- Rows]);
        false -> [true = ets:insert(items(UserId), Row) || {UserId, Row} <- Rows]
    end;
insert_rows([]) ->
    true.

meta_field(UserId, Pos) ->
    case ets:lookup(?META, UserId) of
        [Row] -> element(Pos, Row);
        [] -> 0
    end.

max_size() ->
    case persistent_term:get(?MAX_KEY, undefined) of
        undefined -> messaging_config:get(message_queue_max_size);
        Max -> Max
    end.

compute_depth_stats() ->
    ets:foldl(fun({_User, _Seq, Count, _Dropped}, Acc = #{total := T, users := U, max := M})
                    when Count > 0 ->
                      Acc#{total := T + Count, users := U + 1, max := max(M, Count)};
                 (_, Acc) ->
                      Acc
              end, #{total => 0, users => 0, max => 0}, ?META).

%%====================================================================
%% Housekeeping process
%%====================================================================

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

init([]) ->
    %% Read once: the bound is on the hot path of every push.
    persistent_term:put(?MAX_KEY, messaging_config:get(message_queue_max_size)),
    erlang:send_after(?STATS_INTERVAL_MS, self(), publish_depth),
    erlang:send_after(?PRUNE_INTERVAL_MS, self(), prune_ids),
    {ok, #{}}.

handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(publish_depth, State) ->
    ets:insert(messaging_state, {?DEPTH_KEY, compute_depth_stats()}),
    erlang:send_after(?STATS_INTERVAL_MS, self(), publish_depth),
    {noreply, State};
handle_info(prune_ids, State) ->
    message_ids:prune(),
    erlang:send_after(?PRUNE_INTERVAL_MS, self(), prune_ids),
    {noreply, State};
handle_info(_Other, State) ->
    {noreply, State}.
