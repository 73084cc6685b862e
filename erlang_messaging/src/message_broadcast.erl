%% Broadcasts. Once a broadcast is durable in the WAL, start/1 fans it out in
%% its own process: every recipient gets a message with its own id (derived
%% from the broadcast id and recipient, so a replay after a crash produces the
%% same ids), conversation_id null and broadcast_id set, dispatched like any
%% message. Progress lives in ETS (messaging_broadcasts) for /stats.
%%
%% Every recipient's message is queued for them (delivered); those who had a
%% WebSocket session open at that moment also got it pushed live (online).
%% Delivered - Online is what waits in the queue for users who were offline.
%%
%% This server only reports progress to Django, at most every 250 ms per
%% broadcast and once more when it is done:
%%   POST {DJANGO_API_URL}/api/messaging/erlang/broadcasts/<id>/progress/
%% A failed report is simply sent again on a later tick.
-module(message_broadcast).
-behaviour(gen_server).

-export([start_link/0, start/1, resume/2, list/0, lookup/1, recipient_message/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

-define(TABLE, messaging_broadcasts).
-define(REPORT_INTERVAL_MS, 250).
-define(KEEP_FINISHED, 100).

%% Row: {Id, Delivered, Total, Status, LastReported, StartedAtMs, Online}
%% Status: sending | done; LastReported: none | {Delivered, Status}
%% Online: how many of the Delivered had a connected session (pushed live).
-define(DELIVERED_POS, 2).
-define(STATUS_POS, 4).
-define(REPORTED_POS, 5).
-define(ONLINE_POS, 7).

%%====================================================================
%% API
%%====================================================================

%% @doc Begin fanning out a durable broadcast.
-spec start(map()) -> ok.
start(B) ->
    resume(B, []).

%% @doc Fan out the recipients whose message ids are not in AlreadyDone (the
%% ids Django confirmed before a restart).
-spec resume(map(), [binary()]) -> ok.
resume(B = #{id := Bid, user_ids := UserIds}, AlreadyDone) ->
    Done = sets:from_list(AlreadyDone, [{version, 2}]),
    Todo = [U || U <- UserIds, not sets:is_element(message_ids:derived_uuid(Bid, U), Done)],
    Total = length(UserIds),
    %% Recipients done before a restart are counted as delivered; whether they
    %% were online then is not known here, so Django keeps its larger count.
    ets:insert(?TABLE, {Bid, Total - length(Todo), Total, sending, none,
                        erlang:system_time(millisecond), 0}),
    _ = proc_lib:spawn(fun() -> fan_out(B, Todo) end),
    ok.

%% @doc Progress of recent broadcasts, newest first (for /stats).
-spec list() -> [map()].
list() ->
    Rows = lists:reverse(lists:keysort(6, ets:tab2list(?TABLE))),
    [row_to_map(R) || R <- Rows].

-spec lookup(binary()) -> {ok, map()} | not_found.
lookup(Bid) ->
    case ets:lookup(?TABLE, Bid) of
        [Row] -> {ok, row_to_map(Row)};
        [] -> not_found
    end.

%% @doc The message a recipient gets for broadcast B. It carries the
%% broadcast request's request_id (broadcasts logged before request ids
%% existed have none).
-spec recipient_message(map(), integer()) -> map().
recipient_message(B = #{id := Bid, sender_id := Sender, text := Text, priority := Prio,
                        created_at := CreatedAt}, UserId) ->
    Msg = #{id => message_ids:derived_uuid(Bid, UserId), conversation_id => null,
            sender_id => Sender, receiver_id => UserId, text => Text, priority => Prio,
            created_at => CreatedAt, broadcast_id => Bid},
    maps:merge(Msg, maps:with([request_id], B)).

%%====================================================================
%% Fan-out (one process per broadcast)
%%====================================================================

fan_out(B = #{id := Bid}, UserIds) ->
    lists:foreach(fun(U) -> deliver_one(B, U) end, UserIds),
    ets:update_element(?TABLE, Bid, {?STATUS_POS, done}).

%% dispatch/1 already retries a restarting router; if even that fails, wait
%% and try again: the broadcast is acknowledged and must reach everyone.
deliver_one(B = #{id := Bid}, UserId) ->
    %% The router pushes to the sessions the same lookup finds a moment later.
    Online = messaging_ws:sessions(UserId) =/= [],
    try message_router:dispatch(recipient_message(B, UserId)) of
        {ok, _Dropped} -> ets:update_counter(?TABLE, Bid, progress_increments(Online))
    catch Class:Reason ->
        ?LOG_WARNING("broadcast ~s to ~p failed (~p:~p), retrying", [Bid, UserId, Class, Reason],
                     maps:with([request_id], B)),
        timer:sleep(200),
        deliver_one(B, UserId)
    end.

%% The counters one delivered recipient moves: delivered, and online when
%% the recipient had a session open.
-spec progress_increments(boolean()) -> [{pos_integer(), 1}].
progress_increments(true) -> [{?DELIVERED_POS, 1}, {?ONLINE_POS, 1}];
progress_increments(false) -> [{?DELIVERED_POS, 1}].

%%====================================================================
%% Progress reporter
%%====================================================================

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

init([]) ->
    erlang:send_after(?REPORT_INTERVAL_MS, self(), report),
    {ok, #{reporter => undefined}}.

handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

%% One reporting round at a time, in a helper, so a slow Django never blocks
%% this server; the next round starts after the previous one finished.
handle_info(report, State = #{reporter := undefined}) ->
    erlang:send_after(?REPORT_INTERVAL_MS, self(), report),
    prune_finished(),
    {Pid, Ref} = spawn_monitor(fun report_changed/0),
    {noreply, State#{reporter := {Pid, Ref}}};
handle_info(report, State) ->
    erlang:send_after(?REPORT_INTERVAL_MS, self(), report),
    {noreply, State};
handle_info({'DOWN', Ref, process, _, _}, State = #{reporter := {_, Ref}}) ->
    {noreply, State#{reporter := undefined}};
handle_info(_Other, State) ->
    {noreply, State}.

report_changed() ->
    [report(Bid, Delivered, Total, Status, Online)
     || {Bid, Delivered, Total, Status, Reported, _, Online} <- ets:tab2list(?TABLE),
        Reported =/= {Delivered, Status}].

report(Bid, Delivered, Total, Status, Online) ->
    Path = "/api/messaging/erlang/broadcasts/" ++ uri_string:quote(binary_to_list(Bid))
        ++ "/progress/",
    Body = #{delivered => Delivered, total => Total, status => Status, online => Online},
    case django_client:post_json(Path, Body) of
        {ok, Code, _} when Code >= 200, Code < 300 ->
            ets:update_element(?TABLE, Bid, {?REPORTED_POS, {Delivered, Status}});
        Other ->
            ?LOG_INFO("broadcast ~s progress report failed: ~p", [Bid, summarize(Other)])
    end.

summarize({ok, Code, _}) -> {http_status, Code};
summarize(Other) -> Other.

%% Keep the newest finished-and-reported broadcasts only, so /stats stays small.
prune_finished() ->
    Finished = [{Started, Bid} || {Bid, D, _T, done, {D, done}, Started, _Online} <- ets:tab2list(?TABLE)],
    Old = lists:nthtail(min(length(Finished), ?KEEP_FINISHED), lists:reverse(lists:sort(Finished))),
    [ets:delete(?TABLE, Bid) || {_, Bid} <- Old],
    ok.

row_to_map({Bid, Delivered, Total, Status, _Reported, _Started, Online}) ->
    #{id => Bid, delivered => Delivered, total => Total, status => Status, online => Online}.
