%% Unit tests of the operations pieces that are pure functions: the shared
%% secret check with rotation, request ids, WebSocket tokens under rotation,
%% the JSON log formatter and LOG_LEVEL parsing.
-module(ops_tests).
-include_lib("eunit/include/eunit.hrl").

-define(CURRENT, <<"current-secret-B">>).
-define(PREVIOUS, <<"previous-secret-A">>).

%%====================================================================
%% messaging_auth
%%====================================================================

token_ok_with_one_secret_test() ->
    ?assert(messaging_auth:token_ok(<<"s3cret">>, <<"s3cret">>)),
    ?assert(messaging_auth:token_ok("s3cret", <<"s3cret">>)),
    ?assertNot(messaging_auth:token_ok(<<"s3cre">>, <<"s3cret">>)),
    ?assertNot(messaging_auth:token_ok(undefined, <<"s3cret">>)),
    %% An empty configured secret accepts nothing, not even an empty token.
    ?assertNot(messaging_auth:token_ok(<<>>, <<>>)).

token_ok_during_rotation_accepts_current_and_previous_test() ->
    Secrets = [?CURRENT, ?PREVIOUS],
    ?assert(messaging_auth:token_ok(?CURRENT, Secrets)),
    ?assert(messaging_auth:token_ok(?PREVIOUS, Secrets)),
    ?assertNot(messaging_auth:token_ok(<<"some-other-secret">>, Secrets)),
    ?assertNot(messaging_auth:token_ok(<<>>, Secrets)),
    ?assertNot(messaging_auth:token_ok(undefined, Secrets)).

token_ok_ignores_an_empty_previous_secret_test() ->
    ?assertNot(messaging_auth:token_ok(<<>>, [?CURRENT, <<>>])),
    ?assert(messaging_auth:token_ok(?CURRENT, [?CURRENT, <<>>])).

token_ok_refuses_tokens_that_are_not_text_test() ->
    ?assertNot(messaging_auth:token_ok([16#110000], [?CURRENT])),
    ?assertNot(messaging_auth:token_ok(42, [?CURRENT])).

configured_secrets_test_() ->
    {setup, fun() -> set_secrets(?CURRENT, ?PREVIOUS) end, fun(_) -> unset_secrets() end,
     [?_assertEqual([?CURRENT, ?PREVIOUS], messaging_auth:configured_secrets()),
      ?_test(begin
                 application:set_env(messaging_service, shared_secret_previous, <<>>),
                 ?assertEqual([?CURRENT], messaging_auth:configured_secrets())
             end)]}.

%%====================================================================
%% Request ids
%%====================================================================

request_id_kept_when_valid_test() ->
    ?assertEqual(<<"abc-123">>, messaging_request_id:from_header("abc-123")),
    ?assertEqual(<<"req.1:2_3-X">>, messaging_request_id:from_header(<<"req.1:2_3-X">>)),
    Max = lists:duplicate(64, $a),
    ?assertEqual(list_to_binary(Max), messaging_request_id:from_header(Max)).

request_id_replaced_when_missing_or_unusable_test() ->
    [?assertMatch(<<_:32/binary>>, messaging_request_id:from_header(Bad))
     || Bad <- [undefined, "", "has space", "quote\"", "new\nline", lists:duplicate(65, $a),
                "ümlaut", "a,b"]].

new_request_ids_are_32_lowercase_hex_and_differ_test() ->
    Ids = [messaging_request_id:new() || _ <- lists:seq(1, 100)],
    [?assertMatch({match, _}, re:run(Id, "^[0-9a-f]{32}$")) || Id <- Ids],
    ?assertEqual(100, length(lists:usort(Ids))).

%%====================================================================
%% WebSocket tokens under rotation
%%====================================================================

ws_tokens_signed_with_either_secret_verify_test_() ->
    Expires = erlang:system_time(second) + 300,
    {setup, fun() -> set_secrets(?CURRENT, ?PREVIOUS) end, fun(_) -> unset_secrets() end,
     [?_assertMatch({ok, 7, Expires}, ws_token:claims(ws_token:sign(7, Expires, ?CURRENT))),
      ?_assertMatch({ok, 7, Expires}, ws_token:claims(ws_token:sign(7, Expires, ?PREVIOUS))),
      ?_assertEqual({error, bad_signature},
                    ws_token:claims(ws_token:sign(7, Expires, <<"unrelated-secret">>))),
      ?_assertEqual({error, expired},
                    ws_token:claims(ws_token:sign(7, Expires - 600, ?PREVIOUS)))]}.

ws_tokens_of_the_previous_secret_fail_once_rotation_ends_test_() ->
    Expires = erlang:system_time(second) + 300,
    {setup, fun() -> set_secrets(?CURRENT, <<>>) end, fun(_) -> unset_secrets() end,
     [?_assertEqual({error, bad_signature},
                    ws_token:claims(ws_token:sign(7, Expires, ?PREVIOUS)))]}.

%%====================================================================
%% JSON log formatter
%%====================================================================

json_line_has_the_documented_fields_test() ->
    Line = format_json(#{level => info, msg => {string, <<"POST /messages 202">>},
                         meta => meta(#{request_id => <<"req-1">>, status => 202})}),
    Fields = decode_line(Line),
    ?assertMatch(#{<<"time">> := _, <<"level">> := <<"info">>, <<"logger">> := <<"messaging_http">>,
                   <<"message">> := <<"POST /messages 202">>, <<"request_id">> := <<"req-1">>,
                   <<"status">> := 202, <<"node">> := _, <<"pid">> := _}, Fields),
    ?assertMatch({match, _}, re:run(maps:get(<<"time">>, Fields),
                                    "^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$")).

json_time_is_rfc3339_utc_with_milliseconds_test() ->
    Micros = 1700000000005123,
    Fields = decode_line(format_json(#{level => notice, msg => {string, "x"},
                                       meta => #{time => Micros}})),
    ?assertEqual(<<"2023-11-14T22:13:20.005Z">>, maps:get(<<"time">>, Fields)).

json_encodes_any_term_safely_test() ->
    Meta = meta(#{bytes => <<255, 0, 200>>, pid_value => self(), ref => make_ref(),
                  tuple => {a, "b", <<"c">>}, improper => [1 | 2], nested => #{k => [x, <<"y">>]},
                  {tuple, key} => 1, text => "plain string"}),
    Fields = decode_line(format_json(#{level => warning, msg => {"~p", [{<<255>>, self()}]},
                                       meta => Meta})),
    [?assert(is_binary(maps:get(K, Fields)))
     || K <- [<<"bytes">>, <<"pid_value">>, <<"ref">>, <<"tuple">>, <<"improper">>]],
    ?assertEqual(#{<<"k">> => [<<"x">>, <<"y">>]}, maps:get(<<"nested">>, Fields)),
    ?assertEqual(<<"plain string">>, maps:get(<<"text">>, Fields)).

json_report_with_callback_is_one_line_test() ->
    Report = #{label => {supervisor, child_terminated},
               report => [{supervisor, {local, sup}}, {errorContext, child_terminated},
                          {reason, {boom, lists:seq(1, 200)}}, {offender, [{pid, self()}]}]},
    Line = format_json(#{level => error, msg => {report, Report},
                         meta => meta(#{report_cb => fun supervisor:format_log/2,
                                        domain => [otp, sasl]})}),
    Fields = decode_line(Line),
    ?assertEqual(<<"otp.sasl">>, maps:get(<<"domain">>, Fields)),
    ?assertNotEqual(nomatch, binary:match(maps:get(<<"message">>, Fields), <<"boom">>)).

json_bad_format_still_gives_a_line_test() ->
    Fields = decode_line(format_json(#{level => error, msg => {"~p ~p", [only_one]},
                                       meta => meta(#{})})),
    ?assert(is_binary(maps:get(<<"message">>, Fields))).

json_multi_line_text_stays_on_one_line_test() ->
    Line = format_json(#{level => info, msg => {string, "first\nsecond"}, meta => meta(#{})}),
    ?assertEqual(<<"first\nsecond">>, maps:get(<<"message">>, decode_line(Line))).

secrets_are_scrubbed_in_both_formats_test_() ->
    {setup, fun() -> messaging_log_formatter:set_secrets([?CURRENT, ?PREVIOUS, <<>>]) end,
     fun(_) -> messaging_log_formatter:set_secrets([]) end,
     [?_test(begin
                 Event = #{level => warning,
                           msg => {"token ~s and ~p", [?CURRENT, {header, ?PREVIOUS}]},
                           meta => meta(#{token => ?PREVIOUS, list => [?CURRENT]})},
                 Json = iolist_to_binary(format_json(Event)),
                 Plain = iolist_to_binary(messaging_log_formatter:format(Event, #{format => plain})),
                 [?assertEqual(nomatch, binary:match(Out, S))
                  || Out <- [Json, Plain], S <- [?CURRENT, ?PREVIOUS]],
                 ?assertNotEqual(nomatch, binary:match(Json, <<"[redacted]">>)),
                 ?assertNotEqual(nomatch, binary:match(Plain, <<"[redacted]">>))
             end)]}.

check_config_test() ->
    ?assertEqual(ok, messaging_log_formatter:check_config(#{format => json})),
    ?assertEqual(ok, messaging_log_formatter:check_config(#{format => plain, plain => #{}})),
    ?assertMatch({error, _}, messaging_log_formatter:check_config(#{format => xml})).

parse_level_test() ->
    ?assertEqual({ok, info}, messaging_logging:parse_level("info")),
    ?assertEqual({ok, debug}, messaging_logging:parse_level("debug")),
    ?assertEqual(error, messaging_logging:parse_level("verbose")).

%%====================================================================
%% Helpers
%%====================================================================

set_secrets(Current, Previous) ->
    application:load(messaging_service),
    application:set_env(messaging_service, shared_secret, Current),
    application:set_env(messaging_service, shared_secret_previous, Previous).

unset_secrets() ->
    application:unset_env(messaging_service, shared_secret),
    application:unset_env(messaging_service, shared_secret_previous).

meta(Extra) ->
    maps:merge(#{time => logger:timestamp(), mfa => {messaging_http, loop, 1}, pid => self(),
                 gl => group_leader()}, Extra).

format_json(Event) ->
    messaging_log_formatter:format(Event, #{format => json}).

%% Exactly one line, ending in a newline, holding one JSON object.
decode_line(Chardata) ->
    Line = iolist_to_binary(Chardata),
    ?assertEqual(1, length(binary:matches(Line, <<"\n">>))),
    ?assertEqual($\n, binary:last(Line)),
    jiffy:decode(Line, [return_maps]).
