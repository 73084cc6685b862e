%% Shared-secret check for the internal API. Both sides are hashed first so
%% the comparison is constant time even when the lengths differ
%% (crypto:hash_equals/2 needs equal-length inputs).
-module(messaging_auth).

-export([token_ok/2]).

-spec token_ok(undefined | string() | binary(), binary()) -> boolean().
token_ok(undefined, _Secret) ->
    false;
token_ok(Given, Secret) when is_list(Given) ->
    token_ok(unicode:characters_to_binary(Given), Secret);
token_ok(Given, Secret) when is_binary(Given), is_binary(Secret) ->
    crypto:hash_equals(crypto:hash(sha256, Given), crypto:hash(sha256, Secret))
        andalso Secret =/= <<>>;
token_ok(_Given, _Secret) ->
    false.
