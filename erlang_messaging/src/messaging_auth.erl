%% Shared-secret check for the internal API. Both sides are hashed first so
%% the comparison is constant time even when the lengths differ
%% (crypto:hash_equals/2 needs equal-length inputs).
%%
%% Rotation: while MESSAGING_SHARED_SECRET_PREVIOUS is set, a caller may
%% present either the current or the previous secret. Every secret is
%% compared, whichever matches, so the time taken does not tell which one did.
-module(messaging_auth).

-export([token_ok/2, configured_secrets/0, request_token/1]).

-define(TOKEN_HEADER, "x-messaging-token").

%% @doc Does Given equal the secret (or one of the secrets)? An empty secret
%% never matches: an unset previous secret must not accept an empty token.
-spec token_ok(undefined | string() | binary(), binary() | [binary()]) -> boolean().
token_ok(undefined, _Secrets) ->
    false;
token_ok(Given, Secrets) when is_list(Given) ->
    try unicode:characters_to_binary(Given) of
        Bin when is_binary(Bin) -> token_ok(Bin, Secrets);
        _ -> false
    catch error:badarg -> false
    end;
token_ok(Given, Secret) when is_binary(Secret) ->
    token_ok(Given, [Secret]);
token_ok(Given, Secrets) when is_binary(Given), is_list(Secrets) ->
    GivenHash = crypto:hash(sha256, Given),
    lists:foldl(fun(Secret, Matched) -> matches(GivenHash, Secret) or Matched end,
                false, Secrets);
token_ok(_Given, _Secrets) ->
    false.

matches(GivenHash, Secret) when is_binary(Secret), Secret =/= <<>> ->
    crypto:hash_equals(GivenHash, crypto:hash(sha256, Secret));
matches(_GivenHash, _Secret) ->
    false.

%% @doc The secrets callers may present, current first: MESSAGING_SHARED_SECRET
%% and, during a rotation, MESSAGING_SHARED_SECRET_PREVIOUS.
-spec configured_secrets() -> [binary()].
configured_secrets() ->
    Current = messaging_config:get(shared_secret),
    case messaging_config:get(shared_secret_previous) of
        <<>> -> [Current];
        Previous -> [Current, Previous]
    end.

%% @doc The token a request presents: the X-Messaging-Token header, or else
%% `Authorization: Bearer <token>` (what Prometheus sends).
-spec request_token(term()) -> undefined | string().
request_token(Req) ->
    case mochiweb_request:get_header_value(?TOKEN_HEADER, Req) of
        undefined -> bearer(mochiweb_request:get_header_value("authorization", Req));
        Token -> Token
    end.

bearer(undefined) ->
    undefined;
bearer(Authorization) ->
    case string:split(string:trim(Authorization), " ") of
        [Scheme, Token] ->
            case string:lowercase(Scheme) of
                "bearer" -> string:trim(Token);
                _ -> undefined
            end;
        _ ->
            undefined
    end.
