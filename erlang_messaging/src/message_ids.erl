%% Ids accepted recently, so a client retrying a POST with the same id gets the
%% same answer without the message being routed twice. Entries expire after a
%% while (Django deduplicates anything older by id anyway).
-module(message_ids).

-export([new_uuid/0, derived_uuid/2, claim/1, claim_all/1, release/1, remember/1, prune/0, is_uuid/1]).

-define(TABLE, messaging_known_ids).
-define(TTL_MS, 600000).

%% @doc A random (version 4) UUID as a lowercase binary.
-spec new_uuid() -> binary().
new_uuid() ->
    <<A:48, _:4, B:12, _:2, C:62>> = crypto:strong_rand_bytes(16),
    format(<<A:48, 4:4, B:12, 2:2, C:62>>).

%% @doc A UUID derived from a broadcast id and a recipient (version 8 layout).
%% Deterministic so that re-running a broadcast after a crash produces the
%% same message ids and Django deduplicates them.
-spec derived_uuid(binary(), integer()) -> binary().
derived_uuid(BroadcastId, UserId) ->
    <<A:48, _:4, B:12, _:2, C:62, _/binary>> =
        crypto:hash(sha256, [BroadcastId, $:, integer_to_binary(UserId)]),
    format(<<A:48, 8:4, B:12, 2:2, C:62>>).

%% @doc true if Id was not known and is now claimed by the caller.
-spec claim(binary()) -> boolean().
claim(Id) ->
    ets:insert_new(?TABLE, {Id, now_ms()}).

%% @doc true if none of Ids was known and all are now claimed; false (and
%% nothing claimed) if any was known. Ids must be distinct.
-spec claim_all([binary()]) -> boolean().
claim_all(Ids) ->
    Now = now_ms(),
    ets:insert_new(?TABLE, [{Id, Now} || Id <- Ids]).

%% @doc Undo a claim whose message never became durable.
release(Id) ->
    ets:delete(?TABLE, Id).

%% @doc Mark ids as known (WAL replay).
remember(Ids) ->
    Now = now_ms(),
    ets:insert(?TABLE, [{Id, Now} || Id <- Ids]).

prune() ->
    Cutoff = now_ms() - ?TTL_MS,
    ets:select_delete(?TABLE, [{{'_', '$1'}, [{'<', '$1', Cutoff}], [true]}]).

-spec is_uuid(term()) -> boolean().
is_uuid(<<_:8/binary, $-, _:4/binary, $-, _:4/binary, $-, _:4/binary, $-, _:12/binary>> = Id) ->
    all_uuid_chars(Id);
is_uuid(_) ->
    false.

all_uuid_chars(<<C, Rest/binary>>) ->
    (is_hex(C) orelse C =:= $-) andalso all_uuid_chars(Rest);
all_uuid_chars(<<>>) ->
    true.

is_hex(C) -> (C >= $0 andalso C =< $9) orelse (C >= $a andalso C =< $f)
                 orelse (C >= $A andalso C =< $F).

%% Hand-rolled hex, one nibble at a time: io_lib:format costs microseconds on
%% every accepted message.
format(<<A:4/binary, B:2/binary, C:2/binary, D:2/binary, E:6/binary>>) ->
    <<(hex(A))/binary, $-, (hex(B))/binary, $-, (hex(C))/binary, $-, (hex(D))/binary, $-,
      (hex(E))/binary>>.

hex(Bin) ->
    << <<(nibble(H)), (nibble(L))>> || <<H:4, L:4>> <= Bin >>.

nibble(N) when N < 10 -> $0 + N;
nibble(N) -> $a - 10 + N.

now_ms() -> erlang:monotonic_time(millisecond).
