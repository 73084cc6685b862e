%% GET /metrics: the service's figures in Prometheus' text exposition format
%% 0.0.4, written directly (a handful of families; no client library in
%% Debian). Every value is read at scrape time: the hot-path counters from
%% stats_collector's lock-free array, the rest from the running processes,
%% the write-ahead log's directory and the VM.
%%
%% The names are a contract with the alert rules (deploy/): change none
%% without them.
-module(messaging_metrics).

-export([render/0, content_type/0]).

-define(PRIORITIES, [high, normal, low]).

-type sample() :: {[{atom(), atom() | binary()}], number()}.

%% @doc The Content-Type of render/0's document.
-spec content_type() -> string().
content_type() ->
    "text/plain; version=0.0.4; charset=utf-8".

%% @doc Every metric family, with its # HELP and # TYPE lines.
-spec render() -> iodata().
render() ->
    [family(Name, Type, Help, Samples) || {Name, Type, Help, Samples} <- families()].

families() ->
    [per_priority(<<"messaging_messages_accepted_total">>, accepted,
                  <<"Messages accepted: written to the write-ahead log and acknowledged.">>),
     per_priority(<<"messaging_messages_routed_total">>, routed,
                  <<"Messages routed to their receiver's queue.">>),
     per_priority(<<"messaging_messages_delivered_total">>, delivered,
                  <<"Messages delivered: pushed over a WebSocket or acknowledged from a queue.">>),
     per_priority(<<"messaging_messages_dropped_total">>, dropped,
                  <<"Queued messages dropped, oldest first, from a receiver's full queue.">>),
     {<<"messaging_persistence_batches_total">>, counter,
      <<"Persistence callbacks to Django: ok (answered 2xx) or failed (any other answer, "
        "or none).">>,
      [{[{outcome, O}], stats_collector:persistence_batches(O)} || O <- [ok, failed]]},
     {<<"messaging_persistence_lag_seconds">>, gauge,
      <<"Age of the oldest accepted message Django has not confirmed yet; 0 when none.">>,
      [{[], message_persistence:lag_seconds()}]},
     {<<"messaging_wal_bytes">>, gauge,
      <<"Size of the write-ahead log's files on disk.">>,
      [{[], message_wal:disk_bytes()}]},
     {<<"messaging_messages_dead_lettered_total">>, counter,
      <<"Messages Django rejected and dead-lettered (never retried).">>,
      [{[], stats_collector:dead_lettered()}]},
     {<<"messaging_websocket_connections">>, gauge,
      <<"Open WebSocket sessions on this node.">>,
      [{[], stats_collector:ws_connections()}]},
     {<<"messaging_vm_memory_bytes">>, gauge,
      <<"Memory used by the Erlang VM, by kind (erlang:memory/0).">>,
      [{[{kind, Kind}], Bytes} || {Kind, Bytes} <- erlang:memory()]},
     {<<"messaging_vm_processes">>, gauge,
      <<"Erlang processes on this node.">>,
      [{[], erlang:system_info(process_count)}]},
     {<<"messaging_cluster_members">>, gauge,
      <<"Nodes in the messaging cluster, this one included.">>,
      [{[], length(nodes()) + 1}]},
     {<<"messaging_up">>, gauge,
      <<"1 while the service answers.">>,
      [{[], 1}]}].

per_priority(Name, Metric, Help) ->
    {Name, counter, Help, [{[{priority, P}], stats_collector:get(Metric, P)} || P <- ?PRIORITIES]}.

%%====================================================================
%% Exposition format
%%====================================================================

-spec family(binary(), counter | gauge, binary(), [sample()]) -> iodata().
family(Name, Type, Help, Samples) ->
    [<<"# HELP ">>, Name, $\s, escape_help(Help), $\n,
     <<"# TYPE ">>, Name, $\s, atom_to_binary(Type), $\n,
     [[Name, labels(Labels), $\s, number(Value), $\n] || {Labels, Value} <- Samples]].

labels([]) ->
    [];
labels(Labels) ->
    [${, lists:join($,, [[atom_to_binary(K), <<"=\"">>, escape_label(text(V)), $"]
                         || {K, V} <- Labels]), $}].

text(V) when is_atom(V) -> atom_to_binary(V);
text(V) when is_binary(V) -> V.

number(N) when is_integer(N) -> integer_to_binary(N);
number(F) when is_float(F) -> float_to_binary(F, [short]).

%% The format's escapes: backslash and newline in HELP; also the double
%% quote in label values.
escape_help(Text) ->
    binary:replace(binary:replace(Text, <<"\\">>, <<"\\\\">>, [global]),
                   <<"\n">>, <<"\\n">>, [global]).

escape_label(Text) ->
    binary:replace(escape_help(Text), <<"\"">>, <<"\\\"">>, [global]).
