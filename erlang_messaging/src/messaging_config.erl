%% Runtime settings. Each key is read from, in order: the application env
%% (so tests can override without touching the OS env), the OS environment
%% variable, then the built-in default. Values are parsed to their type here
%% so callers never deal with strings.
-module(messaging_config).

-export([get/1, all/0]).
-compile({no_auto_import, [get/1]}).

-include_lib("kernel/include/logger.hrl").

-type key() :: http_port | django_api_url | shared_secret | shared_secret_previous
             | max_connections
             | message_queue_max_size | persist_batch_size | persist_flush_interval_ms
             | max_body_bytes | data_dir
             | max_pending | restart_intensity | restart_period | bind_ip
             | cluster_nodes | node_name | http_timeout_ms
             %% The HTTP edge (messaging_http_conn, message_validation).
             | http_header_timeout_ms | http_idle_timeout_ms | http_body_timeout_ms
             | message_max_text_chars
             %% WebSocket sessions (messaging_ws).
             | ws_max_connections_per_user | ws_max_message_bytes
             %% Logging (messaging_logging).
             | log_format | log_level.

-spec get(key()) -> term().
get(Key) ->
    {Var, Type, Default} = spec(Key),
    case application:get_env(messaging_service, Key) of
        {ok, Value} -> Value;
        undefined -> from_os(Var, Type, default(Key, Default))
    end.

%% @doc Every setting with its effective value (for logs at start-up); the
%% secrets are shown as "(set)" or "(unset)", never their value.
-spec all() -> [{key(), term()}].
all() ->
    [{K, shown(K, get(K))} || K <- keys()].

shown(Key, Value) when Key =:= shared_secret; Key =:= shared_secret_previous ->
    case Value of
        <<>> -> '(unset)';
        _ -> '(set)'
    end;
shown(_Key, Value) ->
    Value.

keys() ->
    [http_port, django_api_url, shared_secret, shared_secret_previous, max_connections,
     message_queue_max_size,
     persist_batch_size, persist_flush_interval_ms, max_body_bytes, data_dir,
     max_pending, restart_intensity, restart_period,
     bind_ip, cluster_nodes, node_name, http_timeout_ms]
    ++ http_edge_keys() ++ ws_session_keys() ++ [log_format, log_level].

http_edge_keys() ->
    [http_header_timeout_ms, http_idle_timeout_ms, http_body_timeout_ms, message_max_text_chars].

ws_session_keys() ->
    [ws_max_connections_per_user, ws_max_message_bytes].

%% {OS variable, type, default}
spec(http_port) -> {"HTTP_PORT", integer, 8765};
spec(django_api_url) -> {"DJANGO_API_URL", string, "http://127.0.0.1:8000"};
spec(shared_secret) -> {"MESSAGING_SHARED_SECRET", binary, <<"dev-messaging-secret">>};
%% Secret rotation: the secret being replaced, still accepted from callers and
%% tried on callbacks Django refuses with the current one. Empty: none.
spec(shared_secret_previous) -> {"MESSAGING_SHARED_SECRET_PREVIOUS", binary, <<>>};
spec(max_connections) -> {"MAX_CONNECTIONS", integer, 100000};
spec(message_queue_max_size) -> {"MESSAGE_QUEUE_MAX_SIZE", integer, 1000};
spec(persist_batch_size) -> {"PERSIST_BATCH_SIZE", integer, 500};
spec(persist_flush_interval_ms) -> {"PERSIST_FLUSH_INTERVAL_MS", integer, 200};
spec(max_body_bytes) -> {"MAX_BODY_BYTES", integer, 1048576};
spec(data_dir) -> {"MESSAGING_DATA_DIR", string, computed};
spec(max_pending) -> {"MAX_PENDING", integer, 200000};
spec(restart_intensity) -> {"MESSAGING_RESTART_INTENSITY", integer, 10};
spec(restart_period) -> {"MESSAGING_RESTART_PERIOD", integer, 5};
spec(bind_ip) -> {"MESSAGING_BIND", ip, {127, 0, 0, 1}};
spec(cluster_nodes) -> {"MESSAGING_CLUSTER_NODES", atom_list, []};
spec(node_name) -> {"MESSAGING_NODE_NAME", string, ""};
spec(http_timeout_ms) -> {"DJANGO_HTTP_TIMEOUT_MS", integer, 3000};
%% The HTTP edge. A client has HTTP_HEADER_TIMEOUT_MS from connecting to send
%% its whole request head; a kept-alive connection may then idle
%% HTTP_IDLE_TIMEOUT_MS between requests: longer than nginx's upstream
%% keepalive_timeout (60 s), so a proxy closes its idle connections first
%% and never sends a request on one this side is closing. A request body
%% must arrive within HTTP_BODY_TIMEOUT_MS of its head.
spec(http_header_timeout_ms) -> {"HTTP_HEADER_TIMEOUT_MS", integer, 10000};
spec(http_idle_timeout_ms) -> {"HTTP_IDLE_TIMEOUT_MS", integer, 75000};
spec(http_body_timeout_ms) -> {"HTTP_BODY_TIMEOUT_MS", integer, 30000};
%% Must match Django's messaging.services.MAX_TEXT: a longer text would be
%% accepted here and refused when Django stores it. Counted in characters
%% (code points, as Python's len), after trimming whitespace, as Django does.
spec(message_max_text_chars) -> {"MESSAGE_MAX_TEXT_CHARS", integer, 5000};
%% WebSocket sessions (messaging_ws): open sessions per user across the cluster
%% (the next one is closed with 1008), and the largest frame or reassembled
%% message a client may send (above it: close 1009). Clients only send acks and
%% auth frames, a few hundred bytes each.
spec(ws_max_connections_per_user) -> {"WS_MAX_CONNECTIONS_PER_USER", integer, 10};
spec(ws_max_message_bytes) -> {"WS_MAX_MESSAGE_BYTES", integer, 65536};
%% Logging (messaging_logging): "json" (one JSON object per line) or "plain";
%% unset leaves OTP's logger as it is (bin/messaging-start, tests). The
%% release's start hook makes json the default. LOG_LEVEL unset: as is (notice).
spec(log_format) -> {"LOG_FORMAT", string, ""};
spec(log_level) -> {"LOG_LEVEL", string, ""}.

%% The data dir depends on the port so several local nodes never share a WAL.
default(data_dir, computed) ->
    filename:join(["data", integer_to_list(get(http_port))]);
default(_Key, Default) ->
    Default.

from_os(Var, Type, Default) ->
    case os:getenv(Var) of
        false -> Default;
        "" -> Default;
        Raw -> parse(Type, string:trim(Raw), Default)
    end.

parse(integer, Raw, Default) ->
    case string:to_integer(Raw) of
        {N, ""} -> N;
        _ ->
            ?LOG_WARNING("ignoring non-integer setting ~p", [Raw]),
            Default
    end;
parse(string, Raw, _Default) ->
    Raw;
parse(binary, Raw, _Default) ->
    unicode:characters_to_binary(Raw);
parse(ip, Raw, Default) ->
    case inet:parse_address(Raw) of
        {ok, Ip} -> Ip;
        {error, _} -> Default
    end;
parse(atom_list, Raw, _Default) ->
    [list_to_atom(string:trim(N)) || N <- string:split(Raw, ",", all), string:trim(N) =/= ""].
