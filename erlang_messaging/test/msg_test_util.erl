%% Helpers shared by the HTTP and fault suites: start the application on a
%% free port against fake_django, talk to it over loopback, wait with bounds.
-module(msg_test_util).

-export([start_service/2, stop_service/0, start_app/2, stop_app/0, free_port/0, request/3, request/4,
         request_full/4, post/2, get/1, wait_until/2, send_message/1, app_url/0]).
-compile({no_auto_import, [get/1]}).

-define(TOKEN, "dev-messaging-secret").

%% @doc What a suite needs: mochiweb, fake_django, and the application with its
%% write-ahead log in the suite's priv_dir. Returns the HTTP port.
start_service(Config, Overrides) ->
    {ok, _} = application:ensure_all_started(mochiweb),
    {ok, _} = fake_django:start(),
    DataDir = filename:join(proplists:get_value(priv_dir, Config), "wal"),
    start_app(DataDir, Overrides).

stop_service() ->
    stop_app(),
    fake_django:stop().

%% Overrides: extra application env ({Key, Value}) on top of test defaults.
%% Application env wins over OS variables in messaging_config, so settings
%% other suites put in the OS environment do not leak in; any instance a
%% previous suite left running is stopped first.
start_app(DataDir, Overrides) ->
    {ok, _} = application:ensure_all_started(inets),
    _ = application:stop(messaging_service),
    application:load(messaging_service),
    Port = free_port(),
    Defaults = [{http_port, Port}, {django_api_url, fake_django:url()}, {data_dir, DataDir},
                {shared_secret, <<?TOKEN>>}, {persist_flush_interval_ms, 50},
                {persist_batch_size, 500}, {message_queue_max_size, 1000},
                {max_body_bytes, 1048576}, {max_pending, 200000},
                {restart_intensity, 1000}, {restart_period, 1}, {cluster_nodes, []}],
    Env = lists:ukeymerge(1, lists:ukeysort(1, Overrides), lists:ukeysort(1, Defaults)),
    [application:set_env(messaging_service, K, V) || {K, V} <- Env],
    {ok, _} = application:ensure_all_started(messaging_service),
    persistent_term:put({?MODULE, port}, Port),
    Port.

stop_app() ->
    application:stop(messaging_service),
    [application:unset_env(messaging_service, K) || {K, _} <- application:get_all_env(messaging_service)],
    ok.

free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(S),
    gen_tcp:close(S),
    Port.

app_url() ->
    "http://127.0.0.1:" ++ integer_to_list(persistent_term:get({?MODULE, port})).

%% -> {Status, DecodedJsonOrRaw}
request(Method, Path, Body) ->
    request(Method, Path, Body, [{"x-messaging-token", ?TOKEN}]).

request(Method, Path, Body, Headers) ->
    {Status, _RespHeaders, RespBody} = request_full(Method, Path, Body, Headers),
    {Status, RespBody}.

%% -> {Status, [{LowercaseHeaderName, Value}], DecodedJsonOrRaw}
request_full(Method, Path, Body, Headers) ->
    Url = app_url() ++ Path,
    Req = case Body of
              none -> {Url, Headers};
              _ -> {Url, Headers, "application/json", encode(Body)}
          end,
    {ok, {{_, Status, _}, RespHeaders, RespBody}} =
        httpc:request(Method, Req, [{timeout, 15000}], [{body_format, binary}]),
    {Status, RespHeaders, decode(RespBody)}.

post(Path, Body) -> request(post, Path, Body).
get(Path) -> request(get, Path, none).

encode(B) when is_binary(B) -> B;
encode(Term) -> jiffy:encode(Term).

decode(<<>>) -> <<>>;
decode(B) -> try jiffy:decode(B, [return_maps]) catch _:_ -> B end.

%% Sends one message; returns its id when accepted (202), else {error, Status}.
send_message(Fields) ->
    Body = maps:merge(#{sender_id => 1, receiver_id => 2, text => <<"hello">>}, Fields),
    case catch post("/messages", Body) of
        {202, #{<<"id">> := Id}} -> {ok, Id};
        Other -> {error, Other}
    end.

%% Polls Fun every 50 ms until it returns true or TimeoutMs passes.
wait_until(Fun, TimeoutMs) ->
    Deadline = erlang:monotonic_time(millisecond) + TimeoutMs,
    wait_loop(Fun, Deadline).

wait_loop(Fun, Deadline) ->
    case catch Fun() of
        true -> ok;
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> timeout;
                false -> timer:sleep(50), wait_loop(Fun, Deadline)
            end
    end.
