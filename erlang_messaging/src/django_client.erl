%% Minimal JSON-over-HTTP client for the Django internal API (httpc with short
%% timeouts and the shared-secret header). Never raises: callers decide
%% whether and when to retry.
%%
%% Every call carries X-Request-Id (the caller's, or a fresh one) so Django's
%% logs can be matched with this service's.
%%
%% Secret rotation: a call is sent with the current secret; if Django answers
%% 401 and MESSAGING_SHARED_SECRET_PREVIOUS is set, the same call is sent once
%% more at once with the previous secret (Django may not have been restarted
%% with the new one yet). The current secret is always tried first, so the
%% service needs no state to notice when Django has switched.
-module(django_client).

-export([post_json/2, post_json/3, probe/0]).

-include_lib("kernel/include/logger.hrl").

-define(TOKEN_HEADER, "x-messaging-token").
-define(REQUEST_ID_HEADER, "x-request-id").
%% Which secret Django accepted last (current | previous), to log changes only.
-define(ACCEPTED_KEY, {?MODULE, accepted_secret}).

%% @doc POST Body (a term jiffy can encode) to DJANGO_API_URL ++ Path.
-spec post_json(string(), term()) -> {ok, integer(), term()} | {error, term()}.
post_json(Path, Body) ->
    post_json(Path, Body, #{}).

%% @doc post_json/2 with options: request_id, the X-Request-Id to send.
-spec post_json(string(), term(), #{request_id => binary()}) ->
          {ok, integer(), term()} | {error, term()}.
post_json(Path, Body, Opts) ->
    RequestId = maps:get(request_id, Opts, messaging_request_id:new()),
    %% jiffy returns an iolist for large documents; httpc needs a flat body to
    %% compute Content-Length correctly.
    Json = iolist_to_binary(jiffy:encode(Body)),
    Send = fun(Secret) ->
                   Request = {url(Path), headers(Secret, RequestId), "application/json", Json},
                   request(post, Request, [{body_format, binary}])
           end,
    with_secrets(Send, messaging_auth:configured_secrets()).

%% @doc true if Django answers HTTP at all (any status), for /health.
-spec probe() -> boolean().
probe() ->
    [Current | _] = messaging_auth:configured_secrets(),
    Request = {url("/api/messaging/erlang/persist/"),
               headers(Current, messaging_request_id:new())},
    case request(get, Request, []) of
        {ok, _Status, _Body} -> true;
        {error, _} -> false
    end.

%%====================================================================
%% Internals
%%====================================================================

with_secrets(Send, [Current | Previous]) ->
    case {Send(Current), Previous} of
        {{ok, 401, _} = Refused, [Old]} ->
            case Send(Old) of
                {ok, 401, _} -> Refused;
                Result -> note_accepted(previous, Result)
            end;
        {Result, _} ->
            note_accepted(current, Result)
    end.

%% A notice when Django starts or stops taking the previous secret: the
%% moment an operator waits for during a rotation.
note_accepted(Which, Result = {ok, Status, _}) when Status =/= 401 ->
    case persistent_term:get(?ACCEPTED_KEY, current) of
        Which -> ok;
        _ ->
            persistent_term:put(?ACCEPTED_KEY, Which),
            ?LOG_NOTICE("Django now accepts the ~s messaging secret", [Which])
    end,
    Result;
note_accepted(_Which, Result) ->
    Result.

request(Method, Request, Options) ->
    try httpc:request(Method, Request, http_options(), Options) of
        {ok, {{_, Status, _}, _Headers, RespBody}} -> {ok, Status, decode(RespBody)};
        {error, Reason} -> {error, Reason}
    catch Class:Reason ->
        %% Only the reason's tag: a crash inside httpc could carry the request,
        %% and with it the secret, into the caller's log line.
        {error, {Class, reason_tag(Reason)}}
    end.

url(Path) ->
    string:trim(messaging_config:get(django_api_url), trailing, "/") ++ Path.

headers(Secret, RequestId) ->
    [{?TOKEN_HEADER, binary_to_list(Secret)}, {?REQUEST_ID_HEADER, binary_to_list(RequestId)}].

http_options() ->
    Timeout = messaging_config:get(http_timeout_ms),
    [{timeout, Timeout}, {connect_timeout, min(Timeout, 1000)}].

decode(<<>>) ->
    #{};
decode(Body) ->
    try jiffy:decode(Body, [return_maps])
    catch _:_ -> {undecodable, Body}
    end.

reason_tag(Reason) when is_tuple(Reason), tuple_size(Reason) > 0, is_atom(element(1, Reason)) ->
    element(1, Reason);
reason_tag(Reason) when is_atom(Reason) ->
    Reason;
reason_tag(_Reason) ->
    unexpected.
