%% Helpers of the write-ahead-log suites (wal_SUITE, wal_crash_SUITE):
%% client-side message ids and bodies, POST /messages/batch, bounded waits,
%% and looks at the log files from outside the service.
-module(wal_test_util).

-export([settings/3, uuid/2, message/4, post/3, post_batch/2, send_all/2, wait_until/2,
         wal_bytes/1, generations/1, log_terms/1, free_port/0]).

-define(TOKEN, "dev-messaging-secret").

%% Application env for a service on Port with its log in Dir, talking to
%% wal_fake_django; Overrides win. Application env beats any OS variable
%% another suite left in this VM's environment (see messaging_config).
settings(Port, Dir, Overrides) ->
    Defaults = [{http_port, Port}, {django_api_url, wal_fake_django:url()}, {data_dir, Dir},
                {shared_secret, <<?TOKEN>>}, {persist_flush_interval_ms, 50},
                {persist_batch_size, 500}, {message_queue_max_size, 1000},
                {max_body_bytes, 4194304}, {max_pending, 200000},
                {restart_intensity, 1000}, {restart_period, 1}, {cluster_nodes, []}],
    lists:ukeymerge(1, lists:ukeysort(1, Overrides), lists:ukeysort(1, Defaults)).

%% A client-chosen message id: run Run, number N (a valid UUID string).
uuid(Run, N) ->
    iolist_to_binary(io_lib:format("~8.16.0b-0000-4000-8000-~12.16.0b", [Run, N])).

message(Id, ConversationId, ReceiverId, Text) ->
    #{<<"id">> => Id, <<"sender_id">> => 1, <<"receiver_id">> => ReceiverId,
      <<"conversation_id">> => ConversationId, <<"text">> => Text}.

post_batch(Port, Msgs) ->
    post(Port, "/messages/batch", #{<<"messages">> => Msgs}).

%% -> {Status, DecodedBody} | {error, Reason}
post(Port, Path, Body) ->
    Url = "http://127.0.0.1:" ++ integer_to_list(Port) ++ Path,
    Req = {Url, [{"x-messaging-token", ?TOKEN}], "application/json", jiffy:encode(Body)},
    case httpc:request(post, Req, [{timeout, 60000}], [{body_format, binary}]) of
        {ok, {{_, Status, _}, _Headers, Answer}} -> {Status, catch jiffy:decode(Answer, [return_maps])};
        {error, Reason} -> {error, Reason}
    end.

%% Posts the messages as one batch and returns their ids once every one was
%% accepted (202); fails the test otherwise.
send_all(Port, Msgs) ->
    {202, #{<<"results">> := Results}} = post_batch(Port, Msgs),
    Ids = [Id || #{<<"id">> := Id} <- Msgs],
    Ids = [Id || #{<<"id">> := Id, <<"status">> := <<"accepted">>} <- Results],
    Ids.

%% Polls Fun every 50 ms until it returns true; ok | timeout.
wait_until(Fun, TimeoutMs) ->
    msg_test_util:wait_until(Fun, TimeoutMs).

%% The log's generation numbers and total size, as the file system sees them.
generations(Dir) ->
    lists:sort([list_to_integer(N) || F <- filelib:wildcard("wal.*.LOG", Dir),
                                      [_, N, _] <- [string:split(F, ".", all)]]).

wal_bytes(Dir) ->
    lists:sum([filelib:file_size(gen_file(Dir, G)) || G <- generations(Dir)]).

%% Every term on disk, per generation: [{Gen, [Term]}]. Reads copies, so the
%% repair disk_log does on a log that was not closed never touches the files
%% a (paused or dead) node left behind.
log_terms(Dir) ->
    Scratch = filename:join(Dir, "scan." ++ integer_to_list(erlang:unique_integer([positive]))),
    ok = filelib:ensure_dir(filename:join(Scratch, "x")),
    Gens = generations(Dir),
    [{ok, _} = file:copy(gen_file(Dir, G), gen_file(Scratch, G)) || G <- Gens],
    Terms = [{G, read_log(gen_file(Scratch, G))} || G <- Gens],
    [ok = file:delete(gen_file(Scratch, G)) || G <- Gens],
    ok = file:del_dir(Scratch),
    Terms.

read_log(File) ->
    Name = {wal_scan, make_ref()},
    {ok, Name} = case disk_log:open([{name, Name}, {file, File}, {type, halt}, {format, internal},
                                     {repair, true}]) of
                     {repaired, Name, _, _} -> {ok, Name};
                     Other -> Other
                 end,
    Terms = read_chunks(Name, start, []),
    ok = disk_log:close(Name),
    Terms.

read_chunks(Name, Cont, Acc) ->
    case disk_log:chunk(Name, Cont) of
        eof -> lists:append(lists:reverse(Acc));
        {Cont1, Terms} -> read_chunks(Name, Cont1, [Terms | Acc]);
        {Cont1, Terms, _Bad} -> read_chunks(Name, Cont1, [Terms | Acc])
    end.

gen_file(Dir, Gen) -> filename:join(Dir, "wal." ++ integer_to_list(Gen) ++ ".LOG").

free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(S),
    gen_tcp:close(S),
    Port.
