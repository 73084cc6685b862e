%% A minimal stand-in for Django's persist endpoint, for the write-ahead-log
%% suites (wal_SUITE, wal_crash_SUITE). It answers {"stored": [ids]} for what
%% it stores, can fail every request with 503 (Django down), and can refuse
%% to confirm the messages with one value in one field (a conversation, a
%% receiver): it leaves them out of "stored", so the service keeps them
%% unconfirmed and sends them again. Broadcast progress reports get 200. It
%% counts every arrival of every id, so a suite can tell what was replayed.
%% Kept apart from fake_django so these suites can count half a million ids
%% without its arrival log.
-module(wal_fake_django).

-export([start/0, stop/0, url/0, set_mode/1, never_confirm/1, never_confirm/2, stored_count/0, stored/1,
         arrivals/1, reset_arrivals/0, reset/0, loop/1]).

-define(SECRET, "dev-messaging-secret").
-define(STORED, wal_fake_stored).
-define(ARRIVALS, wal_fake_arrivals).
-define(CFG, wal_fake_cfg).

start() ->
    Parent = self(),
    Owner = spawn(fun() -> own_tables(Parent) end),
    receive {tables_ready, Owner} -> ok after 5000 -> error(wal_fake_django_tables) end,
    ets:insert(?CFG, {owner, Owner}),
    {ok, port()}.

stop() ->
    case catch ets:lookup(?CFG, owner) of
        [{owner, Owner}] -> Owner ! stop;
        _ -> ok
    end,
    ok.

port() -> mochiweb_socket_server:get(?MODULE, port).

url() -> "http://127.0.0.1:" ++ integer_to_list(port()).

%% ok | fail
set_mode(Mode) -> ets:insert(?CFG, {mode, Mode}).

%% Messages of this conversation are never confirmed (none: all are).
never_confirm(ConversationId) -> never_confirm(<<"conversation_id">>, ConversationId).

%% Messages whose Field (a JSON key) is Value are never confirmed.
never_confirm(Field, Value) -> ets:insert(?CFG, {never_confirm, {Field, Value}}).


stored_count() -> ets:info(?STORED, size).

stored(Id) -> ets:member(?STORED, Id).

%% How many times Id reached this fake since the last reset_arrivals/0.
arrivals(Id) ->
    case ets:lookup(?ARRIVALS, Id) of
        [{_, N}] -> N;
        [] -> 0
    end.

reset_arrivals() -> ets:delete_all_objects(?ARRIVALS).

reset() ->
    [ets:delete_all_objects(T) || T <- [?STORED, ?ARRIVALS]],
    set_mode(ok),
    ets:insert(?CFG, {never_confirm, none}).

own_tables(Parent) ->
    [ets:new(T, [named_table, public, set, {write_concurrency, true}]) || T <- [?STORED, ?ARRIVALS, ?CFG]],
    ets:insert(?CFG, [{mode, ok}, {never_confirm, none}]),
    %% Started from this long-lived process: the listener must not die with
    %% the short-lived process that runs init_per_suite.
    {ok, _} = mochiweb_http:start_link([{name, ?MODULE}, {ip, {127, 0, 0, 1}}, {port, 0},
                                        {loop, fun ?MODULE:loop/1}]),
    Parent ! {tables_ready, self()},
    receive stop -> catch mochiweb_http:stop(?MODULE), ok end.

loop(Req) ->
    [{mode, Mode}] = ets:lookup(?CFG, mode),
    Token = mochiweb_request:get_header_value("x-messaging-token", Req),
    case {mochiweb_request:get(method, Req), string:lexemes(mochiweb_request:get(path, Req), "/")} of
        {'POST', ["api", "messaging", "erlang", "persist"]} when Mode =:= fail ->
            reply(503, #{error => <<"down">>}, Req);
        {'POST', ["api", "messaging", "erlang", "persist"]} when Token =:= ?SECRET ->
            persist(mochiweb_request:recv_body(Req), Req);
        {'POST', ["api", "messaging", "erlang", "broadcasts", _Bid, "progress"]} when Token =:= ?SECRET ->
            reply(200, #{ok => true}, Req);
        {'POST', _} when Token =/= ?SECRET ->
            reply(401, #{error => <<"bad token">>}, Req);
        {'POST', _} ->
            reply(404, #{error => <<"not found">>}, Req);
        %% The service's reachability probe: Django's views take POST only.
        _ ->
            reply(405, #{error => <<"method not allowed">>}, Req)
    end.

persist(Body, Req) ->
    #{<<"messages">> := Msgs} = jiffy:decode(Body, [return_maps]),
    [{never_confirm, Never}] = ets:lookup(?CFG, never_confirm),
    Stored = [Id || #{<<"id">> := Id} = M <- Msgs, arrived(Id), not matches(Never, M)],
    ets:insert(?STORED, [{Id} || Id <- Stored]),
    reply(200, #{stored => Stored, duplicates => [], rejected => []}, Req).

matches({Field, Value}, Msg) -> maps:get(Field, Msg, null) =:= Value;
matches(none, _Msg) -> false.

arrived(Id) ->
    ets:update_counter(?ARRIVALS, Id, 1, {Id, 0}),
    true.

reply(Code, Body, Req) ->
    mochiweb_request:respond({Code, [{"Content-Type", "application/json"}], jiffy:encode(Body)}, Req).
