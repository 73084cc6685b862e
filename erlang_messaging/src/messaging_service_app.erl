%% OTP application callback: the whole service is one supervision tree.
-module(messaging_service_app).
-behaviour(application).

-export([start/2, stop/1]).

-include_lib("kernel/include/logger.hrl").

%% Started by messaging_service:start_foreground/0 (bin/messaging-start) or by the
%% release's boot script (bin/messaging_service foreground); both log the same line.
%% Logging is set up first, so every report from here on (a child's crash,
%% the supervisor's) is written in the configured format.
start(_Type, _Args) ->
    ok = messaging_logging:setup(),
    case messaging_service_sup:start_link() of
        {ok, _Pid} = Started ->
            ?LOG_NOTICE("messaging_service listening on port ~p (node ~p)",
                          [messaging_config:get(http_port), node()]),
            Started;
        Error ->
            Error
    end.

stop(_State) ->
    ok.
