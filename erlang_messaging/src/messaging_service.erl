%% Entry points for running the service from a shell script.
-module(messaging_service).

-export([start_foreground/0]).

%% @doc Start the application and keep the VM running. SIGTERM makes the
%% runtime call init:stop/0, which stops the application cleanly and exits.
start_foreground() ->
    case application:ensure_all_started(messaging_service) of
        {ok, _Started} ->
            logger:notice("messaging_service listening on port ~p (node ~p)",
                          [messaging_config:get(http_port), node()]),
            receive after infinity -> ok end;
        {error, Reason} ->
            io:format(standard_error, "messaging_service failed to start: ~p~n", [Reason]),
            erlang:halt(1)
    end.
