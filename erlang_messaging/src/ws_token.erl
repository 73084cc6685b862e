%% Signed WebSocket tokens shared with Django.
%%
%% Format: "<user_id>.<expires_unix>.<hex(HMAC-SHA256(secret, "<user_id>.<expires_unix>"))>"
%% with the hex digest in lowercase. Django signs, this service only verifies
%% (sign/3 exists for tests and tooling). A token is valid while the current
%% unix time is below its expiry; claims/1 also gives that expiry, so a
%% WebSocket session knows when to close (messaging_ws).
%%
%% During a secret rotation (MESSAGING_SHARED_SECRET_PREVIOUS set) verify/1
%% and claims/1 accept tokens signed with either secret: Django's app servers
%% switch to the new secret one by one, and tokens they signed before stay
%% valid until they expire.
-module(ws_token).

-export([sign/3, verify/1, verify/3, claims/1, claims/3, secret/0, secrets/0]).

-define(DEFAULT_SECRET, "dev-messaging-secret").
-define(DIGEST_HEX_LEN, 64).

-type reason() :: missing | malformed | bad_signature | expired.
-export_type([reason/0]).

%% @doc Build a token for UserId valid until ExpiresUnix (seconds since epoch).
-spec sign(pos_integer(), integer(), iodata()) -> binary().
sign(UserId, ExpiresUnix, Secret) ->
    Payload = payload(UserId, ExpiresUnix),
    <<Payload/binary, ".", (digest_hex(Secret, Payload))/binary>>.

%% @doc Verify with the configured secrets against the current time.
-spec verify(term()) -> {ok, pos_integer()} | {error, reason()}.
verify(Token) ->
    case claims(Token) of
        {ok, UserId, _ExpiresUnix} -> {ok, UserId};
        Error -> Error
    end.

-spec verify(term(), iodata(), integer()) -> {ok, pos_integer()} | {error, reason()}.
verify(Token, Secret, Now) ->
    case claims(Token, Secret, Now) of
        {ok, UserId, _ExpiresUnix} -> {ok, UserId};
        Error -> Error
    end.

%% @doc Verify like verify/1 and also return the token's expiry (unix seconds).
-spec claims(term()) -> {ok, pos_integer(), integer()} | {error, reason()}.
claims(Token) ->
    claims_any(Token, secrets(), erlang:system_time(second)).

%% A signature that fails with the current secret is tried with the previous
%% one; any other answer (expired, malformed) is the same for both.
claims_any(Token, [Secret | Others], Now) ->
    case claims(Token, Secret, Now) of
        {error, bad_signature} when Others =/= [] -> claims_any(Token, Others, Now);
        Result -> Result
    end.

%% Anything but a binary or a string (a JSON number or null from a client's
%% frame) is malformed.
-spec claims(term(), iodata(), integer()) -> {ok, pos_integer(), integer()} | {error, reason()}.
claims(undefined, _Secret, _Now) ->
    {error, missing};
claims(Token, Secret, Now) when is_list(Token) ->
    try unicode:characters_to_binary(Token) of
        Bin when is_binary(Bin) -> claims(Bin, Secret, Now);
        _ -> {error, malformed}
    catch error:badarg -> {error, malformed}
    end;
claims(<<>>, _Secret, _Now) ->
    {error, missing};
claims(Token, Secret, Now) when is_binary(Token) ->
    case split(Token) of
        {ok, UserId, Expires, Given} -> check(UserId, Expires, Given, Secret, Now);
        error -> {error, malformed}
    end;
claims(_Token, _Secret, _Now) ->
    {error, malformed}.

%% The signature is checked before expiry so a forged token never learns
%% anything from the error it gets back.
check(UserId, Expires, Given, Secret, Now) ->
    Expected = digest_hex(Secret, payload(UserId, Expires)),
    case crypto:hash_equals(Expected, string:lowercase(Given)) of
        false -> {error, bad_signature};
        true when Expires =< Now -> {error, expired};
        true -> {ok, UserId, Expires}
    end.

split(Token) ->
    case binary:split(Token, <<".">>, [global]) of
        [U, E, Sig] when byte_size(Sig) =:= ?DIGEST_HEX_LEN ->
            case {to_int(U), to_int(E), is_hex(Sig)} of
                {UserId, Expires, true} when is_integer(UserId), UserId > 0, is_integer(Expires) ->
                    {ok, UserId, Expires, Sig};
                _ ->
                    error
            end;
        _ ->
            error
    end.

%% Only plain decimal digits: "+5" or " 5" would sign differently in Django.
to_int(<<>>) -> error;
to_int(Bin) ->
    case lists:all(fun(C) -> C >= $0 andalso C =< $9 end, binary_to_list(Bin)) of
        true -> binary_to_integer(Bin);
        false -> error
    end.

%% Hex only, so lowercasing keeps the size that crypto:hash_equals/2 needs.
is_hex(Bin) ->
    lists:all(fun(C) -> (C >= $0 andalso C =< $9) orelse (C >= $a andalso C =< $f)
                        orelse (C >= $A andalso C =< $F) end,
              binary_to_list(Bin)).

payload(UserId, ExpiresUnix) ->
    <<(integer_to_binary(UserId))/binary, ".", (integer_to_binary(ExpiresUnix))/binary>>.

digest_hex(Secret, Payload) ->
    Mac = crypto:mac(hmac, sha256, Secret, Payload),
    string:lowercase(binary:encode_hex(Mac)).

%% @doc The shared secret: messaging_config (app env, then the
%% MESSAGING_SHARED_SECRET variable), or the variable directly when this module
%% runs without the rest of the service.
-spec secret() -> binary().
secret() ->
    case config_secret() of
        undefined ->
            case os:getenv("MESSAGING_SHARED_SECRET") of
                Env when is_list(Env), Env =/= "" -> list_to_binary(Env);
                _ -> <<?DEFAULT_SECRET>>
            end;
        Secret ->
            iolist_to_binary(Secret)
    end.

%% @doc The secrets a token may be signed with: secret/0, then the previous
%% secret while a rotation is under way (MESSAGING_SHARED_SECRET_PREVIOUS).
-spec secrets() -> [binary(), ...].
secrets() ->
    case previous_secret() of
        <<>> -> [secret()];
        Previous -> [secret(), Previous]
    end.

previous_secret() ->
    case config_value(shared_secret_previous) of
        undefined ->
            case os:getenv("MESSAGING_SHARED_SECRET_PREVIOUS") of
                Env when is_list(Env) -> list_to_binary(string:trim(Env));
                false -> <<>>
            end;
        Previous ->
            iolist_to_binary(Previous)
    end.

config_secret() ->
    config_value(shared_secret).

config_value(Key) ->
    _ = code:ensure_loaded(messaging_config),
    case erlang:function_exported(messaging_config, get, 1) of
        true ->
            try messaging_config:get(Key) of
                S when is_binary(S); is_list(S) -> S;
                _ -> undefined
            catch _:_ -> undefined
            end;
        false ->
            undefined
    end.
