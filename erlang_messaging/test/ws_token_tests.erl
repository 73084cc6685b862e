-module(ws_token_tests).
-include_lib("eunit/include/eunit.hrl").

-define(SECRET, <<"test-secret">>).
-define(NOW, 1700000000).

sign_verify_roundtrip_test() ->
    Token = ws_token:sign(42, ?NOW + 60, ?SECRET),
    ?assertEqual({ok, 42}, ws_token:verify(Token, ?SECRET, ?NOW)).

format_matches_django_test() ->
    %% Same bytes Django's hmac.new(secret, b"7.1700000060", sha256).hexdigest() gives.
    Expected = string:lowercase(binary:encode_hex(
                 crypto:mac(hmac, sha256, ?SECRET, <<"7.1700000060">>))),
    ?assertEqual(<<"7.1700000060.", Expected/binary>>, ws_token:sign(7, ?NOW + 60, ?SECRET)).

string_token_accepted_test() ->
    Token = binary_to_list(ws_token:sign(5, ?NOW + 60, ?SECRET)),
    ?assertEqual({ok, 5}, ws_token:verify(Token, ?SECRET, ?NOW)).

uppercase_hex_accepted_test() ->
    [U, E, Sig] = binary:split(ws_token:sign(5, ?NOW + 60, ?SECRET), <<".">>, [global]),
    Token = <<U/binary, ".", E/binary, ".", (string:uppercase(Sig))/binary>>,
    ?assertEqual({ok, 5}, ws_token:verify(Token, ?SECRET, ?NOW)).

expired_test() ->
    Token = ws_token:sign(42, ?NOW - 1, ?SECRET),
    ?assertEqual({error, expired}, ws_token:verify(Token, ?SECRET, ?NOW)).

expires_exactly_now_is_expired_test() ->
    Token = ws_token:sign(42, ?NOW, ?SECRET),
    ?assertEqual({error, expired}, ws_token:verify(Token, ?SECRET, ?NOW)).

wrong_secret_test() ->
    Token = ws_token:sign(42, ?NOW + 60, <<"other">>),
    ?assertEqual({error, bad_signature}, ws_token:verify(Token, ?SECRET, ?NOW)).

tampered_user_test() ->
    <<"42", Rest/binary>> = ws_token:sign(42, ?NOW + 60, ?SECRET),
    ?assertEqual({error, bad_signature}, ws_token:verify(<<"43", Rest/binary>>, ?SECRET, ?NOW)).

tampered_expiry_test() ->
    [U, _E, Sig] = binary:split(ws_token:sign(42, ?NOW + 60, ?SECRET), <<".">>, [global]),
    Forged = <<U/binary, ".", (integer_to_binary(?NOW + 99999))/binary, ".", Sig/binary>>,
    ?assertEqual({error, bad_signature}, ws_token:verify(Forged, ?SECRET, ?NOW)).

tampered_signature_test() ->
    Token = ws_token:sign(42, ?NOW + 60, ?SECRET),
    Size = byte_size(Token) - 1,
    <<Head:Size/binary, Last>> = Token,
    Flipped = case Last of $0 -> $1; _ -> $0 end,
    ?assertEqual({error, bad_signature}, ws_token:verify(<<Head/binary, Flipped>>, ?SECRET, ?NOW)).

expired_forgery_reports_signature_test() ->
    Token = ws_token:sign(42, ?NOW - 10, <<"other">>),
    ?assertEqual({error, bad_signature}, ws_token:verify(Token, ?SECRET, ?NOW)).

missing_test() ->
    ?assertEqual({error, missing}, ws_token:verify(undefined, ?SECRET, ?NOW)),
    ?assertEqual({error, missing}, ws_token:verify(<<>>, ?SECRET, ?NOW)).

malformed_test_() ->
    Sig = binary:copy(<<"a">>, 64),
    [?_assertEqual({error, malformed}, ws_token:verify(T, ?SECRET, ?NOW))
     || T <- [<<"garbage">>, <<"1.2">>, <<"1.2.3.4">>, <<"x.1700000060.", Sig/binary>>,
              <<"0.1700000060.", Sig/binary>>, <<"-1.1700000060.", Sig/binary>>,
              <<"+1.1700000060.", Sig/binary>>, <<"1.1700000060.short">>,
              <<"1.1700000060.", (binary:copy(<<"z">>, 64))/binary>>]].

secret_from_environment_test() ->
    Old = os:getenv("MESSAGING_SHARED_SECRET"),
    os:putenv("MESSAGING_SHARED_SECRET", "env-secret"),
    try
        Token = ws_token:sign(9, erlang:system_time(second) + 60, <<"env-secret">>),
        ?assertEqual({ok, 9}, ws_token:verify(Token))
    after
        case Old of
            false -> os:unsetenv("MESSAGING_SHARED_SECRET");
            _ -> os:putenv("MESSAGING_SHARED_SECRET", Old)
        end
    end.

%% A session needs the expiry to know when to close.
claims_give_user_and_expiry_test() ->
    Token = ws_token:sign(42, ?NOW + 60, ?SECRET),
    ?assertEqual({ok, 42, ?NOW + 60}, ws_token:claims(Token, ?SECRET, ?NOW)).

claims_refuse_like_verify_test() ->
    ?assertEqual({error, expired}, ws_token:claims(ws_token:sign(42, ?NOW, ?SECRET), ?SECRET, ?NOW)),
    ?assertEqual({error, bad_signature},
                 ws_token:claims(ws_token:sign(42, ?NOW + 60, <<"other">>), ?SECRET, ?NOW)).

%% A renewal frame's "token" may be any JSON value: only strings can be tokens.
non_string_tokens_are_malformed_test_() ->
    [?_assertEqual({error, malformed}, ws_token:claims(T, ?SECRET, ?NOW))
     || T <- [42, null, true, #{}, [1, 2], [-1]]].
