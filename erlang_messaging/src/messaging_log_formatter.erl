%% A logger formatter (OTP logger's formatter callback) writing each event as
%% one line: a JSON object (LOG_FORMAT=json), or OTP's own text (plain).
%%
%% JSON fields: time (RFC 3339, UTC, milliseconds), level, logger (the module
%% that logged, or the process's registered name), message (one line, as OTP
%% formats it with single_line), node, pid, then the event's metadata (such as
%% request_id, method, status, message_ids). Crash and supervisor reports are
%% events like any other, so they come out as one line too.
%%
%% Any term is encoded safely: text that is not valid UTF-8, pids, refs,
%% tuples and other terms become strings. A formatter that raises makes
%% logger remove its handler, so format/2 falls back to a minimal line on
%% any error.
%%
%% The shared secrets never appear: set_secrets/1 (called by messaging_logging)
%% registers them, and every text is scrubbed before it is encoded.
-module(messaging_log_formatter).

-export([format/2, check_config/1, set_secrets/1]).

-define(SECRETS_KEY, {?MODULE, secrets}).
-define(REDACTED, <<"[redacted]">>).
%% Bounds one line: a huge term in a report is cut, not written whole.
-define(CHARS_LIMIT, 16384).
-define(MESSAGE_CONFIG, #{template => [msg], single_line => true, chars_limit => ?CHARS_LIMIT}).

-type config() :: #{format := json | plain, plain => logger:formatter_config()}.

%% @doc Texts to scrub from every line (empty ones are ignored).
-spec set_secrets([binary()]) -> ok.
set_secrets(Secrets) ->
    case [S || S <- Secrets, is_binary(S), S =/= <<>>] of
        [] -> persistent_term:put(?SECRETS_KEY, none);
        NonEmpty -> persistent_term:put(?SECRETS_KEY, binary:compile_pattern(NonEmpty))
    end.

-spec check_config(config()) -> ok | {error, term()}.
check_config(#{format := json}) ->
    ok;
check_config(#{format := plain} = Config) ->
    logger_formatter:check_config(maps:get(plain, Config, #{}));
check_config(Other) ->
    {error, {invalid_formatter_config, ?MODULE, Other}}.

-spec format(logger:log_event(), config()) -> unicode:chardata().
format(Event, #{format := plain} = Config) ->
    try
        redact(text(logger_formatter:format(Event, maps:get(plain, Config, #{}))))
    catch _:_ ->
        fallback_plain(Event)
    end;
format(Event, _Json) ->
    try
        [jiffy:encode({fields(Event)}), $\n]
    catch _:_ ->
        fallback_json(Event)
    end.

%%====================================================================
%% JSON
%%====================================================================

fields(Event = #{level := Level, meta := Meta}) ->
    [{time, timestamp(maps:get(time, Meta, logger:timestamp()))},
     {level, atom_to_binary(Level)},
     {logger, logger_name(Meta)},
     {message, redact(message(Event))},
     {node, atom_to_binary(node())}
     | pid_field(Meta) ++ domain_field(Meta) ++ metadata(Meta)].

%% A ready string (the per-request line, logged once per request) is taken as
%% it is; a format or a report goes through OTP's own formatter, which also
%% knows every report's callback and writes it on one line.
message(#{msg := {string, String}}) ->
    text(String);
message(Event) ->
    text(logger_formatter:format(Event, ?MESSAGE_CONFIG)).

%% Logged time is microseconds since the epoch; RFC 3339 in UTC with ms, the
%% same text as calendar:system_time_to_rfc3339/2 gives, built directly: that
%% one costs more than the rest of a line.
timestamp(Micros) ->
    Ms = Micros div 1000,
    {{Y, Mo, D}, {H, Mi, S}} = calendar:system_time_to_universal_time(Ms div 1000, second),
    <<(integer_to_binary(Y))/binary, $-, (pad2(Mo))/binary, $-, (pad2(D))/binary, $T,
      (pad2(H))/binary, $:, (pad2(Mi))/binary, $:, (pad2(S))/binary, $.,
      (pad3(Ms rem 1000))/binary, $Z>>.

pad2(N) when N < 10 -> <<$0, ($0 + N)>>;
pad2(N) -> integer_to_binary(N).

pad3(N) when N < 10 -> <<"00", ($0 + N)>>;
pad3(N) when N < 100 -> <<$0, (integer_to_binary(N))/binary>>;
pad3(N) -> integer_to_binary(N).

%% The ?LOG_* macros add mfa; plain logger:info/2 calls and some OTP reports
%% do not: the registered name then says which server it was.
logger_name(#{mfa := {Module, _, _}}) when is_atom(Module) ->
    atom_to_binary(Module);
logger_name(#{pid := Pid}) when is_pid(Pid), node(Pid) =:= node() ->
    case erlang:process_info(Pid, registered_name) of
        {registered_name, Name} -> atom_to_binary(Name);
        _ -> null
    end;
logger_name(_Meta) ->
    null.

pid_field(#{pid := Pid}) when is_pid(Pid) -> [{pid, list_to_binary(pid_to_list(Pid))}];
pid_field(_Meta) -> [].

%% OTP's reports say where they come from: "otp.sasl" for crash and
%% supervisor reports.
domain_field(#{domain := Domain}) when is_list(Domain) ->
    [{domain, text(lists:join($., [term_text(D) || D <- Domain]))}];
domain_field(_Meta) ->
    [].

metadata(Meta) ->
    [{key(K), value(V)} || {K, V} <- maps:to_list(Meta), not reserved(K)].

%% Written as fields of their own (time, pid, domain) or not at all.
reserved(time) -> true;
reserved(level) -> true;
reserved(logger) -> true;
reserved(message) -> true;
reserved(node) -> true;
reserved(pid) -> true;
reserved(mfa) -> true;
reserved(file) -> true;
reserved(line) -> true;
reserved(gl) -> true;
reserved(domain) -> true;
reserved(report_cb) -> true;
reserved(error_logger) -> true;
reserved(logger_formatter) -> true;
reserved(_Key) -> false.

key(K) when is_atom(K) -> atom_to_binary(K);
key(K) when is_binary(K) -> redact(text(K));
key(K) -> redact(term_text(K)).

%% JSON's own types pass; everything else becomes text.
value(V) when is_integer(V); is_float(V); is_boolean(V); V =:= null -> V;
value(V) when is_atom(V) -> atom_to_binary(V);
value(V) when is_binary(V) -> redact(text(V));
value(V) when is_map(V) -> {[{key(K), value(X)} || {K, X} <- maps:to_list(V)]};
value(V) when is_list(V) ->
    case io_lib:printable_unicode_list(V) of
        true -> redact(text(V));
        false -> list_value(V)
    end;
value(V) -> redact(term_text(V)).

%% A proper list becomes an array; an improper one, text.
list_value(V) ->
    try [value(X) || X <- V]
    catch error:_ -> redact(term_text(V))
    end.

%%====================================================================
%% Text
%%====================================================================

%% Chardata as a UTF-8 binary; bytes that are not UTF-8 are shown as the
%% Erlang term they are, so nothing is lost and the JSON stays valid.
text(Chardata) ->
    try unicode:characters_to_binary(Chardata) of
        Bin when is_binary(Bin) -> Bin;
        _Invalid -> term_text(Chardata)
    catch error:badarg -> term_text(Chardata)
    end.

term_text(Term) ->
    unicode:characters_to_binary(io_lib:format("~0tp", [Term], [{chars_limit, ?CHARS_LIMIT}])).

%% Most texts hold no secret: one search decides, the replace is rare.
redact(Text) ->
    case persistent_term:get(?SECRETS_KEY, none) of
        none -> Text;
        Pattern ->
            case binary:match(Text, Pattern) of
                nomatch -> Text;
                _Found -> binary:replace(Text, Pattern, ?REDACTED, [global])
            end
    end.

%%====================================================================
%% Fallbacks: a line is written whatever the event holds
%%====================================================================

fallback_json(#{level := Level} = Event) ->
    Message = redact(term_text(maps:get(msg, Event, undefined))),
    [jiffy:encode({[{time, timestamp(logger:timestamp())},
                    {level, atom_to_binary(Level)},
                    {logger, null},
                    {message, <<"unformattable log event: ", Message/binary>>},
                    {node, atom_to_binary(node())}]}), $\n].

fallback_plain(#{level := Level} = Event) ->
    [atom_to_binary(Level), <<": unformattable log event: ">>,
     redact(term_text(maps:get(msg, Event, undefined))), $\n].
