%% OTP application callback: the whole service is one supervision tree.
-module(messaging_service_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    messaging_service_sup:start_link().

stop(_State) ->
    ok.
