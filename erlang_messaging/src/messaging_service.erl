%% Entry points for running the service from a shell script.
-module(messaging_service).

-export([start_foreground/0]).

%% @doc Start the application and keep the VM running. SIGTERM makes the
%% runtime call init:stop/0, which stops the application cleanly and exits.
%% The release (rebar.config's relx section) does not call this: its boot
%% script starts the application, as a permanent one.
start_foreground() ->
    case application:ensure_all_started(messaging_service) of
        {ok, _Started} ->
            receive after infinity -> ok end;
        {error, Reason} ->
            io:format(standard_error, "messaging_service failed to start: ~p~n", [Reason]),
            erlang:halt(1)
    end.
