%% A stand-in for Django's internal messaging API, for the test suites. It
%% listens on a free loopback port, records every persisted message (a set by
%% id, plus the arrival order) and every broadcast progress report, and can
%% be switched to failing mode to simulate Django being down. It accepts the
%% development secret unless told otherwise (set_secrets/1, for rotation
%% tests), and records each POST's X-Request-Id and the token it carried.
-module(fake_django).

-export([start/0, stop/0, url/0, port/0, set_mode/1, ids/0, has_all/1, arrivals/0,
         progress/1, reset/0, loop/1, message/1, set_secrets/1, posts/0]).

-define(SECRET, "dev-messaging-secret").

start() ->
    Parent = self(),
    Owner = spawn(fun() -> own_tables(Parent) end),
    receive {tables_ready, Owner} -> ok after 5000 -> error(fake_django_tables) end,
    ets:insert(fake_django_cfg, {owner, Owner}),
    {ok, port()}.

stop() ->
    case catch ets:lookup(fake_django_cfg, owner) of
        [{owner, Owner}] -> Owner ! stop;
        _ -> ok
    end,
    ok.

port() -> mochiweb_socket_server:get(?MODULE, port).

url() -> "http://127.0.0.1:" ++ integer_to_list(port()).

%% ok | fail | reject (persist refuses every message)
set_mode(Mode) -> ets:insert(fake_django_cfg, {mode, Mode}).

ids() -> [Id || {Id, _} <- ets:tab2list(fake_django_msgs)].

has_all(Ids) -> lists:all(fun(Id) -> ets:member(fake_django_msgs, Id) end, Ids).

%% [{Id, ConversationId}] in arrival order (duplicates included).
arrivals() -> [{Id, Conv} || {_, Id, Conv} <- ets:tab2list(fake_django_arrivals)].

%% The stored message with this id (as the service sent it), or undefined.
message(Id) ->
    case ets:lookup(fake_django_msgs, Id) of
        [{_, Msg}] -> Msg;
        [] -> undefined
    end.

%% The tokens this Django accepts (strings); reset/0 restores the default.
set_secrets(Secrets) -> ets:insert(fake_django_cfg, {secrets, Secrets}).

%% Every POST in arrival order: #{path, request_id, token, status}.
posts() -> [Post || {_, Post} <- ets:tab2list(fake_django_posts)].

%% Last progress body reported for a broadcast, or undefined.
progress(Bid) ->
    case ets:lookup(fake_django_progress, Bid) of
        [{_, Body}] -> Body;
        [] -> undefined
    end.

reset() ->
    [ets:delete_all_objects(T) || T <- [fake_django_msgs, fake_django_arrivals, fake_django_progress,
                                        fake_django_posts]],
    set_secrets([?SECRET]),
    set_mode(ok).

own_tables(Parent) ->
    [ets:new(T, [named_table, public, Type]) || {T, Type} <- [{fake_django_msgs, set},
                                                                {fake_django_arrivals, ordered_set},
                                                                {fake_django_progress, set},
                                                                {fake_django_posts, ordered_set},
                                                                {fake_django_cfg, set}]],
    ets:insert(fake_django_cfg, {mode, ok}),
    set_secrets([?SECRET]),
    %% Started from this long-lived process: the listener must not die with
    %% the short-lived process that runs init_per_suite.
    {ok, _} = mochiweb_http:start_link([{name, ?MODULE}, {ip, {127, 0, 0, 1}}, {port, 0},
                                        {loop, fun ?MODULE:loop/1}]),
    Parent ! {tables_ready, self()},
    receive stop -> catch mochiweb_http:stop(?MODULE), ok end.

loop(Req) ->
    Path = mochiweb_request:get(path, Req),
    Token = mochiweb_request:get_header_value("x-messaging-token", Req),
    [{mode, Mode}] = ets:lookup(fake_django_cfg, mode),
    case mochiweb_request:get(method, Req) of
        %% The service's reachability probe (django_client:probe/0): Django's
        %% views take POST only.
        'GET' -> reply(405, #{error => <<"method not allowed">>}, Req);
        _ ->
            [{secrets, Secrets}] = ets:lookup(fake_django_cfg, secrets),
            Body = mochiweb_request:recv_body(Req),
            Status = respond(Mode, lists:member(Token, Secrets), string:lexemes(Path, "/"), Body, Req),
            ets:insert(fake_django_posts,
                       {erlang:unique_integer([monotonic]),
                        #{path => Path, token => Token, status => Status,
                          request_id => mochiweb_request:get_header_value("x-request-id", Req)}})
    end.

%% Answers and returns the status it answered with.
respond(fail, _TokenOk, _Path, _Body, Req) ->
    reply(503, #{error => <<"down">>}, Req);
respond(_Mode, false, _Path, _Body, Req) ->
    reply(401, #{error => <<"bad token">>}, Req);
%% reject: every message is refused, as Django refuses one it cannot store.
respond(reject, true, ["api", "messaging", "erlang", "persist"], Body, Req) ->
    #{<<"messages">> := Msgs} = jiffy:decode(Body, [return_maps]),
    reply(200, #{stored => [], duplicates => [],
                 rejected => [#{id => id(M), error => <<"refused by the test">>} || M <- Msgs]}, Req);
respond(ok, true, ["api", "messaging", "erlang", "persist"], Body, Req) ->
    #{<<"messages">> := Msgs} = jiffy:decode(Body, [return_maps]),
    {Stored, Dups} = lists:partition(fun store/1, Msgs),
    reply(200, #{stored => [id(M) || M <- Stored], duplicates => [id(M) || M <- Dups],
                 rejected => []}, Req);
respond(_OkOrReject, true, ["api", "messaging", "erlang", "broadcasts", Bid, "progress"], Body, Req) ->
    ets:insert(fake_django_progress, {list_to_binary(Bid), jiffy:decode(Body, [return_maps])}),
    reply(200, #{ok => true}, Req);
respond(_OkOrReject, true, _Path, _Body, Req) ->
    reply(404, #{error => <<"not found">>}, Req).

store(M = #{<<"id">> := Id}) ->
    ets:insert(fake_django_arrivals, {erlang:unique_integer([monotonic]), Id,
                                      maps:get(<<"conversation_id">>, M, null)}),
    ets:insert_new(fake_django_msgs, {Id, M}).

id(#{<<"id">> := Id}) -> Id.

reply(Code, Body, Req) ->
    mochiweb_request:respond({Code, [{"Content-Type", "application/json"}], jiffy:encode(Body)}, Req),
    Code.
