%% GET /health. The status says whether this node can take messages: "ok"
%% (200) while its write-ahead log is writable, "unavailable" (503) when not,
%% since a message is acknowledged only once it is in the log. Django being
%% unreachable does not change it: the node keeps accepting and holds the
%% messages until Django is back (the details show it).
%%
%% Anyone may ask and gets the status only. With the shared secret the answer
%% adds the details an operator needs; nothing here makes a call to Django:
%% reachability is what the last callback or idle probe found.
-module(messaging_health).

-export([check/1]).

-define(PROBE_FILE, ".health-probe").

%% @doc {HTTP status, document}; Detailed: the caller presented the secret.
-spec check(boolean()) -> {200 | 503, map()}.
check(Detailed) ->
    Wal = wal(),
    {Code, Status} = case maps:get(writable, Wal) of
                         true -> {200, ok};
                         false -> {503, unavailable}
                     end,
    case Detailed of
        false -> {Code, #{status => Status}};
        true -> {Code, details(Status, Wal)}
    end.

details(Status, Wal) ->
    Members = [node() | nodes()],
    #{status => Status,
      node => atom_to_binary(node()),
      uptime_seconds => stats_collector:uptime_seconds(),
      wal => Wal,
      django => #{reachable => message_persistence:django_reachable(),
                  last_callback => last_callback(message_persistence:last_callback())},
      persistence => #{pending => message_persistence:pending_count(),
                       lag_seconds => message_persistence:lag_seconds()},
      cluster => #{members => [atom_to_binary(N) || N <- lists:sort(Members)]}}.

%% Writable: the log's owner is running and its directory takes a new file
%% (catches a missing, read-only or remounted directory; a full disk too
%% once it cannot even create an entry).
wal() ->
    Alive = is_pid(whereis(message_wal)),
    DirWritable = dir_writable(messaging_config:get(data_dir)),
    #{writable => Alive andalso DirWritable, process_alive => Alive,
      dir_writable => DirWritable, bytes => message_wal:disk_bytes()}.

dir_writable(Dir) ->
    Probe = filename:join(Dir, ?PROBE_FILE),
    case file:write_file(Probe, <<>>) of
        ok -> _ = file:delete(Probe), true;
        {error, _} -> false
    end.

last_callback(undefined) ->
    null;
last_callback(#{outcome := Outcome, status := Status, at := At}) ->
    #{outcome => Outcome, http_status => Status,
      seconds_ago => max(0, erlang:system_time(second) - At)}.
