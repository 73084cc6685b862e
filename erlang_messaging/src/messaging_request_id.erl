%% Request ids: Django sends X-Request-Id on every call; this service keeps it
%% with each message it accepts (so the persistence callback can name it) and
%% in every log line about the request. A missing or unusable id is replaced
%% by a fresh one, so every request has exactly one.
-module(messaging_request_id).

-export([from_header/1, new/0, is_valid/1]).

-define(MAX_LEN, 64).

%% @doc The request's id: the client's X-Request-Id when it is 1-64
%% characters of [A-Za-z0-9._:-], else a fresh one. Anything else (spaces,
%% quotes, control characters) could forge or break log lines and headers.
-spec from_header(undefined | string() | binary()) -> binary().
from_header(Value) when is_list(Value) ->
    case is_valid(Value) of
        true -> list_to_binary(Value);
        false -> new()
    end;
from_header(Value) when is_binary(Value) ->
    case is_valid(Value) of
        true -> Value;
        false -> new()
    end;
from_header(_Missing) ->
    new().

%% @doc A fresh id: 16 random bytes as 32 lowercase hex digits.
-spec new() -> binary().
new() ->
    <<<<(hex_digit(N))>> || <<N:4>> <= crypto:strong_rand_bytes(16)>>.

-spec is_valid(string() | binary()) -> boolean().
is_valid(Value) when is_binary(Value) ->
    Size = byte_size(Value),
    Size >= 1 andalso Size =< ?MAX_LEN andalso lists:all(fun is_id_char/1, binary_to_list(Value));
is_valid(Value) when is_list(Value) ->
    Value =/= [] andalso length(Value) =< ?MAX_LEN andalso lists:all(fun is_id_char/1, Value);
is_valid(_Other) ->
    false.

is_id_char(C) when C >= $a, C =< $z; C >= $A, C =< $Z; C >= $0, C =< $9 -> true;
is_id_char(C) -> C =:= $. orelse C =:= $_ orelse C =:= $: orelse C =:= $-.

hex_digit(N) when N < 10 -> $0 + N;
hex_digit(N) -> $a + N - 10.
