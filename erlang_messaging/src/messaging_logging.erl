%% Sets OTP's logger up from the environment, first thing when the
%% application starts (messaging_service_app):
%%
%%   LOG_FORMAT=json   one JSON object per line on stdout (messaging_log_formatter);
%%                     the release's default (rel/hooks/pre_start).
%%   LOG_FORMAT=plain  OTP's text, secrets scrubbed.
%%   unset             logger left as it is (bin/messaging-start, tests, benches).
%%   LOG_LEVEL         debug | info | notice | warning | error | ...; unset: as
%%                     configured (notice: OTP's default and the release's
%%                     sys.config). info adds one line per HTTP request.
%%
%% Why not info by default: each line costs 20-30 us of CPU (formatting, then
%% OTP's handler process and the write to stdout), which is 15-20 % of
%% POST /messages throughput at saturation (make bench-messaging); warnings and
%% errors still carry the request id of the request that caused them.
%%
%% A value that is not understood is reported and ignored, as messaging_config
%% does for numbers: logging must never keep the service from starting.
-module(messaging_logging).

-export([setup/0, parse_level/1]).

-include_lib("kernel/include/logger.hrl").

-define(HANDLER, default).
-define(LEVELS, [emergency, alert, critical, error, warning, notice, info, debug, all, none]).

-spec setup() -> ok.
setup() ->
    messaging_log_formatter:set_secrets(messaging_auth:configured_secrets()),
    Format = normalized(messaging_config:get(log_format)),
    set_format(Format),
    set_level(normalized(messaging_config:get(log_level))).

set_format("") ->
    ok;
set_format("json") ->
    use_formatter(#{format => json});
set_format("plain") ->
    use_formatter(#{format => plain, plain => current_plain_config()});
set_format(Other) ->
    ?LOG_WARNING("ignoring LOG_FORMAT ~p: expected json or plain", [Other]).

set_level("") ->
    ok;
set_level(Name) ->
    case parse_level(Name) of
        {ok, Level} -> ok = logger:set_primary_config(level, Level);
        error -> ?LOG_WARNING("ignoring LOG_LEVEL ~p: expected one of ~p", [Name, ?LEVELS])
    end.

%% @doc A LOG_LEVEL value as logger's level, if it is one.
-spec parse_level(string()) -> {ok, logger:level() | all | none} | error.
parse_level(Name) ->
    case [L || L <- ?LEVELS, atom_to_list(L) =:= Name] of
        [Level] -> {ok, Level};
        [] -> error
    end.

%% The default handler writes to stdout; one is added if it was removed.
use_formatter(Config) ->
    Formatter = {messaging_log_formatter, Config},
    case logger:get_handler_config(?HANDLER) of
        {ok, _} ->
            ok = logger:update_handler_config(?HANDLER, formatter, Formatter);
        {error, {not_found, _}} ->
            ok = logger:add_handler(?HANDLER, logger_std_h,
                                    #{config => #{type => standard_io}, formatter => Formatter})
    end.

%% Plain keeps the handler's OTP text layout (and whatever it was configured
%% with), only scrubbed; a second setup does not wrap the wrapper.
current_plain_config() ->
    case logger:get_handler_config(?HANDLER) of
        {ok, #{formatter := {logger_formatter, Config}}} -> Config;
        {ok, #{formatter := {messaging_log_formatter, #{plain := Config}}}} -> Config;
        _ -> #{}
    end.

normalized(Value) when is_list(Value) ->
    string:lowercase(string:trim(Value));
normalized(_Other) ->
    "".
