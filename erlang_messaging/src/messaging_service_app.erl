%% OTP application callback: the whole service is one supervision tree.
-module(messaging_service_app).
-behaviour(application).

-export([start/2, stop/1]).

%% Started by messaging_service:start_foreground/0 (bin/messaging-start) or by the
%% release's boot script (bin/messaging_service foreground); both log the same line.
start(_Type, _Args) ->
    case messaging_service_sup:start_link() of
        {ok, _Pid} = Started ->
            logger:notice("messaging_service listening on port ~p (node ~p)",
                          [messaging_config:get(http_port), node()]),
            Started;
        Error ->
            Error
    end.

stop(_State) ->
    ok.
