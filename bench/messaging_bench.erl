%% Messaging service benchmark, run by bench/messaging.sh in one VM that also
%% hosts the service. Prints each figure with its target and ratio.
%%
%%   1. in-VM routing msg/s            (message_router:bench/2)
%%   2. POST /messages req/s with wrk, against nginx serving fixed JSON
%%   3. durable msg/s via POST /messages/batch (batches of 500, 202s only)
%%   4. POST -> WebSocket delivery latency p50/p99 at a paced 1,000 msg/s
%%   5. 20,000 idle WebSocket connections and memory per connection
%%
%% Django is replaced by a sink in this VM that stores everything it is sent,
%% so persistence keeps up and nothing piles up in retries.
-module(messaging_bench).

-export([main/1, idle_client/1]).
%% Steps, callable one at a time from a shell while tuning.
-export([routing/0, idle_connections/1, latency/1, start_idle_client/3]).

-define(SECRET, "bench-messaging-secret").
-define(WRK_SECONDS, 10).
-define(BATCH_SIZE, 500).
-define(LATENCY_RATE, 1000).
-define(LATENCY_SECONDS, 5).
-define(IDLE_CONNECTIONS, 20000).
-define(CONNECT_WORKERS, 8).
-define(TIMEOUT_MS, 10000).

main([WorkDir]) ->
    {ok, _} = application:ensure_all_started(inets),
    SinkPort = start_django_sink(),
    Port = start_service(WorkDir, SinkPort),
    io:format("service on 127.0.0.1:~b, ~b schedulers, Django sink on ~b~n",
              [Port, erlang:system_info(schedulers_online), SinkPort]),
    Results = [safe(fun routing/0),
               safe(fun() -> single_post(Port, WorkDir) end),
               safe(fun() -> batch_post(Port, WorkDir) end),
               safe(fun() -> latency(Port) end),
               safe(fun() -> idle_connections(Port) end)],
    io:format("~n== messaging benchmark summary ==~n"),
    [io:format("~s~n", [Line]) || Line <- lists:append(Results)],
    halt(0).

%% One failing figure must not hide the others.
safe(Fun) ->
    try Fun()
    catch Class:Reason:Stack ->
        io:format("benchmark step failed: ~p:~p~n~p~n", [Class, Reason, Stack]),
        [io_lib:format("FAILED: ~p", [Reason])]
    end.

%%====================================================================
%% Setup
%%====================================================================

start_service(WorkDir, SinkPort) ->
    Port = free_port(),
    Env = [{"HTTP_PORT", integer_to_list(Port)},
           {"MESSAGING_DATA_DIR", filename:join(WorkDir, "data")},
           {"MESSAGING_SHARED_SECRET", ?SECRET},
           {"DJANGO_API_URL", "http://127.0.0.1:" ++ integer_to_list(SinkPort)},
           {"MAX_CONNECTIONS", "100000"},
           {"MESSAGE_QUEUE_MAX_SIZE", "1000"}],
    [os:putenv(K, V) || {K, V} <- Env],
    {ok, _} = application:ensure_all_started(messaging_service),
    ok = wait_listening(Port, 50),
    Port.

wait_listening(_Port, 0) ->
    {error, not_listening};
wait_listening(Port, Tries) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [], 200) of
        {ok, S} -> gen_tcp:close(S), ok;
        _ -> timer:sleep(100), wait_listening(Port, Tries - 1)
    end.

%% A stand-in for Django's persist endpoint: every message is "stored".
start_django_sink() ->
    Port = free_port(),
    {ok, _} = mochiweb_http:start([{name, messaging_bench_sink}, {ip, {127, 0, 0, 1}},
                                   {port, Port}, {loop, fun sink_loop/1}]),
    Port.

sink_loop(Req) ->
    Body = mochiweb_request:recv_body(Req),
    Ids = message_ids_in(catch jiffy:decode(Body, [return_maps])),
    Reply = jiffy:encode(#{stored => Ids, duplicates => [], rejected => []}),
    mochiweb_request:respond({200, [{"Content-Type", "application/json"}], Reply}, Req).

message_ids_in(#{<<"messages">> := Messages}) when is_list(Messages) ->
    message_ids_in(Messages);
message_ids_in(Messages) when is_list(Messages) ->
    [Id || #{<<"id">> := Id} <- Messages];
message_ids_in(_) ->
    [].

%%====================================================================
%% 1. In-VM routing
%%====================================================================

%% One producer per scheduler, each handing batches of 500 messages to
%% message_router:route_many/1 (what dispatch_many/1 does after the WAL).
routing() ->
    Producers = erlang:system_info(schedulers),
    _ = message_router:bench(50000, Producers),  % warm-up
    #{per_second := Rate} = message_router:bench(1000000, Producers),
    Label = io_lib:format("routing (in-VM, ~b producers, route_many batches of 500)", [Producers]),
    [figure(Label, Rate, "msg/s", 500000)].

%%====================================================================
%% 2. Single-message POST /messages vs nginx
%%====================================================================

single_post(Port, WorkDir) ->
    Body = message_json(1, 2, <<"hello from wrk">>),
    ok = check_status(Port, "/messages", Body, [201, 202, 200]),
    Script = wrk_script(WorkDir, "post_one", Body),
    Service = wrk(Port, "/messages", Script, 2, 64),
    Nginx = with_nginx(WorkDir, fun(NginxPort) -> wrk(NginxPort, "/", none, 2, 64) end),
    [figure("POST /messages (wrk 2 threads, 64 conns; target = 0.25 x nginx)", Service, "req/s",
            0.25 * Nginx),
     io_lib:format("  nginx fixed JSON anchor: ~s req/s; service/nginx = ~.2f (target 0.25)",
                   [thousands(Nginx), Service / max(1.0, Nginx)])].

%%====================================================================
%% 3. Durable batches
%%====================================================================

batch_post(Port, WorkDir) ->
    Messages = [message_map(1000 + I, 2000 + (I rem 1000), <<"batched message">>)
                || I <- lists:seq(1, ?BATCH_SIZE)],
    Body = jiffy:encode(#{messages => Messages}),
    ok = check_status(Port, "/messages/batch", Body, [202]),
    Script = wrk_script(WorkDir, "post_batch", Body),
    Requests = wrk(Port, "/messages/batch", Script, 2, 8),
    [figure("durable POST /messages/batch (batches of 500, 202 only)",
            Requests * ?BATCH_SIZE, "msg/s", 50000)].

%%====================================================================
%% 4. Send-to-delivery latency
%%====================================================================

%% A keep-alive client POSTs one message per millisecond, each carrying its
%% send time; a WebSocket reader computes receive time minus send time.
latency(Port) ->
    UserId = 777000001,
    Ws = ws_connect(Port, UserId),
    Collector = self(),
    Reader = spawn_link(fun() -> latency_reader(Ws, Collector, []) end),
    ok = gen_tcp:controlling_process(Ws, Reader),
    Reader ! go,
    Total = ?LATENCY_RATE * ?LATENCY_SECONDS,
    {ok, Http} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}, {nodelay, true}]),
    Start = erlang:monotonic_time(microsecond),
    paced_send(Http, UserId, Start, 0, Total),
    Reader ! {stop, self()},
    Samples = receive {latencies, L} -> L after ?TIMEOUT_MS -> [] end,
    gen_tcp:close(Http),
    latency_lines(lists:sort(Samples), Total).

paced_send(_Http, _UserId, _Start, Sent, Total) when Sent >= Total ->
    ok;
paced_send(Http, UserId, Start, Sent, Total) ->
    Due = Start + Sent * (1000000 div ?LATENCY_RATE),
    wait_until_us(Due),
    SentAt = erlang:monotonic_time(microsecond),
    Body = message_json(1, UserId, integer_to_binary(SentAt)),
    {Status, _} = http_keepalive(Http, "/messages", Body),
    true = Status >= 200 andalso Status < 300,
    paced_send(Http, UserId, Start, Sent + 1, Total).

wait_until_us(Due) ->
    case Due - erlang:monotonic_time(microsecond) of
        Wait when Wait > 1500 -> timer:sleep(Wait div 1000 - 1), wait_until_us(Due);
        Wait when Wait > 0 -> wait_until_us(Due);  % short spin for the last ms
        _ -> ok
    end.

latency_reader(Sock, Collector, Acc) ->
    receive go -> ok end,
    ok = inet:setopts(Sock, [{active, true}]),
    latency_loop(Sock, Collector, <<>>, Acc).

latency_loop(Sock, Collector, Buffer, Acc) ->
    receive
        {tcp, Sock, Data} ->
            Now = erlang:monotonic_time(microsecond),
            {Texts, Rest} = ws_frames(<<Buffer/binary, Data/binary>>, []),
            Samples = [Now - sent_at(T) || T <- Texts],
            latency_loop(Sock, Collector, Rest, Samples ++ Acc);
        {stop, From} ->
            timer:sleep(200),  % let the last frames arrive
            drain_latency(Sock, From, Buffer, Acc)
    end.

drain_latency(Sock, From, Buffer, Acc) ->
    receive
        {tcp, Sock, Data} ->
            Now = erlang:monotonic_time(microsecond),
            {Texts, Rest} = ws_frames(<<Buffer/binary, Data/binary>>, []),
            drain_latency(Sock, From, Rest, [Now - sent_at(T) || T <- Texts] ++ Acc)
    after 0 ->
        gen_tcp:close(Sock),
        From ! {latencies, Acc}
    end.

sent_at(Json) ->
    #{<<"message">> := #{<<"text">> := Text}} = jiffy:decode(Json, [return_maps]),
    binary_to_integer(Text).

latency_lines([], _Total) ->
    ["latency: no message delivered over WebSocket"];
latency_lines(Sorted, Total) ->
    P50 = percentile(Sorted, 0.50) / 1000,
    P99 = percentile(Sorted, 0.99) / 1000,
    [io_lib:format("latency POST->WebSocket at ~b msg/s: ~b/~b delivered", [?LATENCY_RATE, length(Sorted), Total]),
     lower_is_better("  p50", P50, "ms", 1.0),
     lower_is_better("  p99", P99, "ms", 5.0)].

percentile(Sorted, Q) ->
    lists:nth(max(1, round(Q * length(Sorted))), Sorted).

%%====================================================================
%% 5. Idle connections
%%====================================================================

%% The clients run in a second VM (idle_client/1) so each side has its own
%% file-descriptor budget, and this VM's memory delta is the server's alone.
%% Per connection we report the whole-VM delta and, more precisely, the
%% sessions' own memory: each hibernated session process plus its socket port.
idle_connections(Port) ->
    Wanted = list_to_integer(os:getenv("MESSAGING_BENCH_IDLE", integer_to_list(?IDLE_CONNECTIONS))),
    Count = min(Wanted, fd_limit() - 200),
    FirstUser = 800000000,
    erlang:garbage_collect(),
    Before = erlang:memory(total),
    Client = start_idle_client(Port, FirstUser, Count),
    Held = await_held(Client),
    timer:sleep(3000),  % sessions hibernate after 1 s idle
    Sessions = lists:append([messaging_ws:sessions(U) || U <- lists:seq(FirstUser, FirstUser + Count - 1)]),
    SessionBytes = session_memory(Sessions),
    After = erlang:memory(total),
    port_close(Client),  % the client halts on EOF and its sockets close
    PerConn = SessionBytes / max(1, length(Sessions)),
    [figure("idle WebSocket connections held", Held, "conns", ?IDLE_CONNECTIONS),
     io_lib:format("  (file descriptor limit here: ~b per process)", [fd_limit()]),
     lower_is_better("  memory per idle connection (session process + socket)", PerConn / 1024, "KB", 10.0),
     io_lib:format("  server VM erlang:memory(total) delta: ~.1f KB per connection",
                   [(After - Before) / max(1, Held) / 1024])].

await_held(Client) ->
    receive
        {Client, {data, {eol, "held " ++ N}}} -> list_to_integer(N);
        {Client, {data, {_, Line}}} -> io:format("idle client: ~s~n", [Line]), await_held(Client);
        {Client, {exit_status, S}} -> io:format("idle client exited (~p)~n", [S]), 0
    after 300000 -> 0
    end.

fd_limit() ->
    case string:to_integer(string:trim(os:cmd("ulimit -n"))) of
        {N, _} when is_integer(N) -> N;
        _ -> 1024
    end.

start_idle_client(Port, FirstUser, Count) ->
    Dirs = lists:usort([filename:dirname(code:which(M)) || M <- [ws_token, messaging_bench]]),
    Args = ["-noshell", "+Q", "65536"] ++ lists:append([["-pa", D] || D <- Dirs]) ++
           ["-run", "messaging_bench", "idle_client",
            integer_to_list(Port), integer_to_list(FirstUser), integer_to_list(Count)],
    open_port({spawn_executable, os:find_executable("erl")},
              [{args, Args}, {line, 256}, use_stdio, exit_status]).

%% Entry point of the client VM: open the connections, report, hold them
%% until stdin closes.
idle_client([PortS, FirstS, CountS]) ->
    [Port, First, Count] = [list_to_integer(S) || S <- [PortS, FirstS, CountS]],
    Holders = open_idle(Port, First, Count),
    io:format("held ~b~n", [lists:sum([N || {_, N} <- Holders])]),
    _ = io:get_line(""),
    halt(0).

open_idle(Port, FirstUser, Count) ->
    Per = Count div ?CONNECT_WORKERS,
    Parent = self(),
    Pids = [spawn_link(fun() -> idle_holder(Parent, Port, FirstUser + W * Per, Per) end)
            || W <- lists:seq(0, ?CONNECT_WORKERS - 1)],
    [receive {held, P, N} -> {P, N} after 240000 -> {P, 0} end || P <- Pids].

idle_holder(Parent, Port, First, Count) ->
    Socks = [S || U <- lists:seq(First, First + Count - 1), {ok, S} <- [catch_connect(Port, U)]],
    Parent ! {held, self(), length(Socks)},
    receive stop -> [gen_tcp:close(S) || S <- Socks] end.

catch_connect(Port, UserId) ->
    try {ok, ws_connect(Port, UserId)}
    catch _:_ -> error
    end.

session_memory(Pids) ->
    Local = [P || P <- Pids, node(P) =:= node()],
    ProcBytes = lists:sum([M || P <- Local, {memory, M} <- [erlang:process_info(P, memory)]]),
    Owned = sets:from_list(Local),
    PortBytes = lists:sum([M || Pt <- erlang:ports(),
                                {connected, Owner} <- [erlang:port_info(Pt, connected)],
                                sets:is_element(Owner, Owned),
                                {memory, M} <- [erlang:port_info(Pt, memory)]]),
    ProcBytes + PortBytes.

%%====================================================================
%% wrk and nginx
%%====================================================================

wrk_script(WorkDir, Name, Body) ->
    BodyFile = filename:join(WorkDir, Name ++ ".json"),
    ok = file:write_file(BodyFile, Body),
    Script = filename:join(WorkDir, Name ++ ".lua"),
    ok = file:write_file(Script, [
        "local f = assert(io.open(\"", BodyFile, "\", \"rb\"))\n",
        "wrk.method = \"POST\"\n",
        "wrk.body = f:read(\"*a\")\n",
        "f:close()\n",
        "wrk.headers[\"Content-Type\"] = \"application/json\"\n",
        "wrk.headers[\"X-Messaging-Token\"] = \"", ?SECRET, "\"\n"]),
    Script.

%% Successful (2xx) requests per second.
wrk(Port, Path, Script, Threads, Conns) ->
    ScriptArgs = case Script of none -> ""; _ -> " -s " ++ Script end,
    Cmd = lists:flatten(io_lib:format("wrk -t~b -c~b -d~bs~s http://127.0.0.1:~b~s 2>&1",
                                      [Threads, Conns, ?WRK_SECONDS, ScriptArgs, Port, Path])),
    Out = os:cmd(Cmd),
    io:format("$ ~s~n~s~n", [Cmd, Out]),
    Total = wrk_number(Out, "([0-9]+) requests in"),
    Bad = wrk_number(Out, "Non-2xx or 3xx responses: ([0-9]+)"),
    Seconds = wrk_seconds(Out),
    (Total - Bad) / Seconds.

wrk_number(Out, Regex) ->
    case re:run(Out, Regex, [{capture, all_but_first, list}]) of
        {match, [N]} -> list_to_integer(N);
        nomatch -> 0
    end.

wrk_seconds(Out) ->
    case re:run(Out, "requests in ([0-9.]+)(m?s)", [{capture, all_but_first, list}]) of
        {match, [N, "s"]} -> to_float(N);
        {match, [N, "ms"]} -> to_float(N) / 1000;
        _ -> float(?WRK_SECONDS)
    end.

to_float(S) ->
    case string:to_float(S) of
        {F, _} when is_float(F) -> F;
        _ -> float(list_to_integer(S))
    end.

%% nginx in the foreground (master + 2 workers, like the 2 schedulers here),
%% prefix and pid file in a temp dir; stopped by its own pid afterwards.
with_nginx(WorkDir, Fun) ->
    Port = free_port(),
    Dir = filename:join(WorkDir, "nginx"),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Conf = filename:join(Dir, "nginx.conf"),
    ok = file:write_file(Conf, nginx_conf(Dir, Port)),
    Nginx = open_port({spawn_executable, os:find_executable("nginx")},
                      [{args, ["-p", Dir, "-e", filename:join(Dir, "error.log"), "-c", Conf]},
                       exit_status, stderr_to_stdout]),
    {os_pid, OsPid} = erlang:port_info(Nginx, os_pid),
    try
        ok = wait_listening(Port, 50),
        Fun(Port)
    after
        os:cmd("kill " ++ integer_to_list(OsPid)),
        receive {Nginx, {exit_status, _}} -> ok after 5000 -> ok end
    end.

nginx_conf(Dir, Port) ->
    io_lib:format(
      "daemon off;\nmaster_process on;\nworker_processes 2;\npid ~s/nginx.pid;\n"
      "error_log ~s/error.log;\n"
      "events { worker_connections 4096; }\n"
      "http {\n  access_log off;\n"
      "  client_body_temp_path ~s/body; proxy_temp_path ~s/proxy;\n"
      "  fastcgi_temp_path ~s/fastcgi; uwsgi_temp_path ~s/uwsgi; scgi_temp_path ~s/scgi;\n"
      "  server {\n    listen 127.0.0.1:~b;\n"
      "    location / { default_type application/json; return 200 '{\"status\":\"ok\"}'; }\n"
      "  }\n}\n", [Dir, Dir, Dir, Dir, Dir, Dir, Dir, Port]).

%%====================================================================
%% Minimal HTTP and WebSocket clients
%%====================================================================

message_map(SenderId, ReceiverId, Text) ->
    #{conversation_id => SenderId * 100000 + ReceiverId rem 100000, sender_id => SenderId,
      receiver_id => ReceiverId, text => Text, priority => <<"normal">>}.

message_json(SenderId, ReceiverId, Text) ->
    jiffy:encode(message_map(SenderId, ReceiverId, Text)).

check_status(Port, Path, Body, Wanted) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
    {Status, Resp} = http_keepalive(S, Path, Body),
    gen_tcp:close(S),
    case lists:member(Status, Wanted) of
        true -> ok;
        false -> error({unexpected_status, Path, Status, Resp})
    end.

http_keepalive(Sock, Path, Body) ->
    ok = gen_tcp:send(Sock, ["POST ", Path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Content-Type: application/json\r\nX-Messaging-Token: ", ?SECRET,
                             "\r\nContent-Length: ", integer_to_list(iolist_size(Body)),
                             "\r\n\r\n", Body]),
    {Status, Headers, Rest} = read_head(Sock, <<>>),
    Len = list_to_integer(proplists:get_value("content-length", Headers, "0")),
    {Status, read_exact(Sock, Len, Rest)}.

read_head(Sock, Acc) ->
    case binary:split(Acc, <<"\r\n\r\n">>) of
        [Head, Rest] ->
            [StatusLine | Lines] = binary:split(Head, <<"\r\n">>, [global]),
            [_, Code | _] = binary:split(StatusLine, <<" ">>, [global]),
            Headers = [{string:lowercase(binary_to_list(K)), string:trim(binary_to_list(V))}
                       || L <- Lines, [K, V] <- [binary:split(L, <<":">>)]],
            {binary_to_integer(Code), Headers, Rest};
        [_] ->
            {ok, More} = gen_tcp:recv(Sock, 0, ?TIMEOUT_MS),
            read_head(Sock, <<Acc/binary, More/binary>>)
    end.

read_exact(_Sock, Len, Acc) when byte_size(Acc) >= Len ->
    Acc;
read_exact(Sock, Len, Acc) ->
    {ok, More} = gen_tcp:recv(Sock, 0, ?TIMEOUT_MS),
    read_exact(Sock, Len, <<Acc/binary, More/binary>>).

ws_connect(Port, UserId) ->
    Token = ws_token:sign(UserId, erlang:system_time(second) + 3600, <<?SECRET>>),
    Key = base64:encode(crypto:strong_rand_bytes(16)),
    {ok, Sock} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}, {nodelay, true}],
                                 ?TIMEOUT_MS),
    ok = gen_tcp:send(Sock, ["GET /ws?token=", Token, " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ", Key, "\r\n\r\n"]),
    {101, _Headers, <<>>} = read_head(Sock, <<>>),
    Sock.

%% Complete text frames in Buffer (server frames are unmasked, unfragmented).
ws_frames(Buffer, Acc) ->
    case cow_ws:parse_header(Buffer, #{}, undefined) of
        {Type, _Frag, _Rsv, Len, _Mask, Rest} when byte_size(Rest) >= Len ->
            <<Payload:Len/binary, Tail/binary>> = Rest,
            Acc2 = case Type of text -> [Payload | Acc]; _ -> Acc end,
            ws_frames(Tail, Acc2);
        _ ->
            {lists:reverse(Acc), Buffer}
    end.

%%====================================================================
%% Output
%%====================================================================

figure(Name, Value, Unit, Target) ->
    io_lib:format("~s: ~s ~s (target ~s: ~.2fx)",
                  [Name, thousands(Value), Unit, thousands(Target), Value / max(1.0e-9, Target)]).

%% For latency and memory the ratio is target / value, so >= 1.0x means met.
lower_is_better(Name, Value, Unit, Target) ->
    io_lib:format("~s: ~.3f ~s (target < ~s ~s: ~.2fx)",
                  [Name, float(Value), Unit, float_to_list(float(Target), [{decimals, 1}]), Unit,
                   Target / max(1.0e-9, Value)]).

thousands(N) when is_float(N) -> thousands(round(N));
thousands(N) when N < 0 -> "-" ++ thousands(-N);
thousands(N) when N < 1000 -> integer_to_list(N);
thousands(N) -> thousands(N div 1000) ++ io_lib:format(",~3..0b", [N rem 1000]).

free_port() ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    gen_tcp:close(L),
    Port.
