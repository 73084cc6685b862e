%% Minimal JSON-over-HTTP client for the Django internal API (httpc with short
%% timeouts and the shared-secret header). Never raises: callers decide
%% whether and when to retry.
-module(django_client).

-export([post_json/2, probe/0]).

-define(TOKEN_HEADER, "x-messaging-token").

%% @doc POST Body (a term jiffy can encode) to DJANGO_API_URL ++ Path.
-spec post_json(string(), term()) -> {ok, integer(), term()} | {error, term()}.
post_json(Path, Body) ->
    %% jiffy returns an iolist for large documents; httpc needs a flat body to
    %% compute Content-Length correctly.
    Request = {url(Path), headers(), "application/json", iolist_to_binary(jiffy:encode(Body))},
    try httpc:request(post, Request, http_options(), [{body_format, binary}]) of
        {ok, {{_, Status, _}, _Headers, RespBody}} -> {ok, Status, decode(RespBody)};
        {error, Reason} -> {error, Reason}
    catch Class:Reason ->
        {error, {Class, Reason}}
    end.

%% @doc true if Django answers HTTP at all (any status), for /health.
-spec probe() -> boolean().
probe() ->
    Request = {url("/api/messaging/erlang/persist/"), headers()},
    case catch httpc:request(get, Request, http_options(), []) of
        {ok, {{_, _Status, _}, _, _}} -> true;
        _ -> false
    end.

url(Path) ->
    string:trim(messaging_config:get(django_api_url), trailing, "/") ++ Path.

headers() ->
    [{?TOKEN_HEADER, binary_to_list(messaging_config:get(shared_secret))}].

http_options() ->
    Timeout = messaging_config:get(http_timeout_ms),
    [{timeout, Timeout}, {connect_timeout, min(Timeout, 1000)}].

decode(<<>>) ->
    #{};
decode(Body) ->
    try jiffy:decode(Body, [return_maps])
    catch _:_ -> {undecodable, Body}
    end.
