%% What message_validation lets through must be storable by Django and
%% PostgreSQL: these are the poison texts and impossible ids it refuses, and
%% the boundaries it still accepts.
-module(message_validation_tests).
-include_lib("eunit/include/eunit.hrl").

-define(MAX_BIGINT, 9223372036854775807).
-define(LIMIT, 5000).

message(Fields) ->
    message_validation:message(maps:merge(#{<<"sender_id">> => 1, <<"receiver_id">> => 2,
                                            <<"text">> => <<"hello">>}, Fields), ?LIMIT).

broadcast(Fields) ->
    message_validation:broadcast(maps:merge(#{<<"sender_id">> => 1, <<"user_ids">> => [2, 3],
                                              <<"text">> => <<"news">>}, Fields), ?LIMIT).

%% {error, Fields} with exactly these field names.
refused_fields({error, Fields}) -> lists:sort(maps:keys(Fields));
refused_fields({ok, _}) -> accepted.

text_refused(Text) ->
    ?assertEqual([<<"text">>], refused_fields(message(#{<<"text">> => Text}))),
    ?assertEqual([<<"text">>], refused_fields(broadcast(#{<<"text">> => Text}))).

text_accepted(Text) ->
    ?assertMatch({ok, #{text := Text}}, message(#{<<"text">> => Text})),
    ?assertMatch({ok, #{text := Text}}, broadcast(#{<<"text">> => Text})).

nul_is_refused_test() ->
    text_refused(<<"a", 0, "b">>),
    text_refused(<<0>>),
    {error, #{<<"text">> := Why}} = message(#{<<"text">> => <<"x", 0>>}),
    ?assertMatch({_, _}, binary:match(Why, <<"NUL">>)).

invalid_utf8_is_refused_test() ->
    text_refused(<<"caf", 16#E9>>),               % Latin-1 byte
    text_refused(<<16#ED, 16#A0, 16#80>>),        % UTF-8 form of the surrogate U+D800
    text_refused(<<16#C0, 16#AF>>),               % overlong "/"
    text_refused(<<"ok", 16#F0, 16#9F>>).         % truncated sequence

blank_is_refused_test() ->
    text_refused(<<>>),
    text_refused(<<" \t\r\n">>),
    %% Python's str.strip() also drops these, so Django would see "".
    text_refused(<<"\x{A0}\x{3000}\x{2003}\x{1C}"/utf8>>).

length_counts_characters_not_bytes_test() ->
    text_accepted(binary:copy(<<"é"/utf8>>, ?LIMIT)),      % 10000 bytes
    text_refused(binary:copy(<<"é"/utf8>>, ?LIMIT + 1)),
    text_accepted(binary:copy(<<"x">>, ?LIMIT)),
    text_refused(binary:copy(<<"x">>, ?LIMIT + 1)).

length_is_counted_after_trimming_like_django_test() ->
    Padded = <<"  ", (binary:copy(<<"x">>, ?LIMIT))/binary, "\n\x{3000}"/utf8>>,
    text_accepted(Padded),
    text_accepted(<<" a b ">>),
    text_refused(<<"a", (binary:copy(<<" ">>, ?LIMIT))/binary, "b">>).

limit_is_a_parameter_test() ->
    Body = #{<<"sender_id">> => 1, <<"receiver_id">> => 2, <<"text">> => <<"eleven char">>},
    ?assertMatch({ok, _}, message_validation:message(Body, 11)),
    {error, #{<<"text">> := Why}} = message_validation:message(Body, 10),
    ?assertEqual(<<"must be at most 10 characters">>, Why).

text_with_other_characters_is_kept_as_sent_test() ->
    text_accepted(<<"tab\there, an emoji ", 16#1F600/utf8, ", a noncharacter ", 16#FFFF/utf8>>).

ids_must_fit_a_bigint_test() ->
    [?assertMatch({ok, _}, message(#{Name => ?MAX_BIGINT}))
     || Name <- [<<"sender_id">>, <<"receiver_id">>, <<"conversation_id">>]],
    [?assertEqual([Name], refused_fields(message(#{Name => Bad})))
     || Name <- [<<"sender_id">>, <<"receiver_id">>, <<"conversation_id">>],
        Bad <- [?MAX_BIGINT + 1, 0, -1, 1.0, <<"1">>, true]].

conversation_id_may_be_null_or_absent_test() ->
    ?assertMatch({ok, #{conversation_id := null}}, message(#{<<"conversation_id">> => null})),
    ?assertMatch({ok, #{conversation_id := null}}, message(#{})),
    ?assertMatch({ok, #{conversation_id := 7}}, message(#{<<"conversation_id">> => 7})).

broadcast_ids_must_fit_a_bigint_test() ->
    ?assertMatch({ok, #{user_ids := [?MAX_BIGINT]}}, broadcast(#{<<"user_ids">> => [?MAX_BIGINT]})),
    [?assertEqual([<<"user_ids">>], refused_fields(broadcast(#{<<"user_ids">> => [2, Bad]})))
     || Bad <- [?MAX_BIGINT + 1, 0, -4, null]],
    ?assertEqual([<<"sender_id">>], refused_fields(broadcast(#{<<"sender_id">> => ?MAX_BIGINT + 1}))).

every_problem_is_reported_per_field_test() ->
    Body = #{<<"sender_id">> => 0, <<"receiver_id">> => ?MAX_BIGINT + 1,
             <<"conversation_id">> => -1, <<"text">> => <<"a", 0>>},
    ?assertEqual([<<"conversation_id">>, <<"receiver_id">>, <<"sender_id">>, <<"text">>],
                 refused_fields(message_validation:message(Body, ?LIMIT))).
