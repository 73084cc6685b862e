%% One HTTP/1.x connection, run by mochiweb_socket_server's acceptor process
%% in place of mochiweb_http's request loop. It reads each request head with
%% the inet driver's http packet mode, as mochiweb_http does, but answers
%% every malformed, over-long or late head with the service's JSON error
%% shape and closes (mochiweb_http answers an empty 400 to some, stays silent
%% on others and waits 300 s for a request line). A valid head becomes a
%% mochiweb request (mochiweb:new_request/1) for the handler, so
%% messaging_http and messaging_ws see exactly what mochiweb gave them;
%% keep-alive follows mochiweb_request:should_close/1 as mochiweb_http does.
%%
%% Deadlines are absolute: on a new connection the whole head must arrive
%% within header_timeout_ms of the accept; on a kept-alive connection the
%% next request line must arrive within idle_timeout_ms of the last answer
%% and its headers within header_timeout_ms of that line. Trickling bytes
%% never extends them.
-module(messaging_http_conn).

-export([start/3]).

%% A request line or header line may be this long, its CRLF included:
%% browsers with big cookies send header lines of several KB (nginx's
%% large_client_header_buffers is 8 KB per line too).
-define(MAX_LINE_BYTES, 8192).
%% A head may hold this many header lines and this many bytes in all.
-define(MAX_HEADERS, 100).
-define(MAX_HEAD_BYTES, 32768).

-record(conn, {
    socket,
    %% mochiweb_socket_server's options for the request ([{recbuf, _}]).
    opts :: list(),
    %% fun((MochiwebRequest) -> term()): answers one request.
    handler :: fun(),
    header_timeout_ms :: pos_integer(),
    idle_timeout_ms :: pos_integer()
}).

%% @doc Entry point: mochiweb_acceptor calls it with each accepted socket
%% (`{loop, {messaging_http_conn, start, [Settings]}}`).
-spec start(term(), list(), #{handler := fun(), header_timeout_ms := pos_integer(),
                              idle_timeout_ms := pos_integer()}) -> no_return().
start(Socket, Opts, #{handler := Handler, header_timeout_ms := HeaderMs,
                      idle_timeout_ms := IdleMs}) ->
    Conn = #conn{socket = Socket, opts = Opts, handler = Handler,
                 header_timeout_ms = HeaderMs, idle_timeout_ms = IdleMs},
    HeadDeadline = deadline(HeaderMs),
    request_line(Conn, first, HeadDeadline).

%%====================================================================
%% Reading a request head
%%====================================================================

%% Waits for the request line; Phase says whether a silent client is one
%% that never sent its request (first: 408) or an idle keep-alive (close).
request_line(Conn = #conn{socket = Socket}, Phase, Deadline) ->
    setopts(Socket, [{packet, http}, {packet_size, ?MAX_LINE_BYTES}]),
    case recv(Socket, Deadline) of
        {ok, {http_request, Method, Uri, Version}} ->
            HeadDeadline = case Phase of
                               first -> Deadline;
                               keep_alive -> deadline(Conn#conn.header_timeout_ms)
                           end,
            check_version(Conn, {Method, Uri, Version}),
            headers(Conn, {Method, Uri, Version}, HeadDeadline);
        %% RFC 9112 2.2: empty lines before a request line are ignored.
        {ok, {http_error, Blank}} when Blank =:= "\r\n"; Blank =:= "\n" ->
            request_line(Conn, Phase, Deadline);
        {ok, _JunkOrResponseLine} ->
            refuse(Conn, 400, <<"bad_request">>, <<"malformed request line">>);
        {error, emsgsize} ->
            refuse(Conn, 414, <<"uri_too_long">>, too_long(<<"the request line">>));
        {error, timeout} when Phase =:= keep_alive ->
            close(Conn, idle_timeout);
        {error, timeout} ->
            refuse(Conn, 408, <<"request_timeout">>, <<"request headers not received in time">>);
        {error, Reason} ->
            close(Conn, Reason)
    end.

check_version(_Conn, {_Method, _Uri, {1, Minor}}) when Minor =:= 0; Minor =:= 1 ->
    ok;
check_version(Conn, _Request) ->
    refuse(Conn, 505, <<"http_version_not_supported">>, <<"only HTTP/1.0 and HTTP/1.1 are served">>).

headers(Conn = #conn{socket = Socket}, Request, Deadline) ->
    %% The driver reads one byte past a header line (to see whether the next
    %% line continues it), hence the + 1 for lines of MAX_LINE_BYTES.
    setopts(Socket, [{packet, httph}, {packet_size, ?MAX_LINE_BYTES + 1}]),
    headers(Conn, Request, Deadline, [], {0, 0}).

%% Size = {header lines, bytes} so far.
headers(Conn = #conn{socket = Socket}, Request, Deadline, RevHeaders, Size) ->
    case recv(Socket, Deadline) of
        {ok, http_eoh} ->
            setopts(Socket, [{packet, raw}]),
            framed_request(Conn, Request, lists:reverse(RevHeaders));
        {ok, {http_header, _, Name, RawName, Value}} ->
            Size2 = add_header_line(Conn, Size, length(RawName) + length(Value) + 4),
            headers(Conn, Request, Deadline, [{Name, Value} | RevHeaders], Size2);
        {ok, _NoColonOrOtherJunk} ->
            refuse(Conn, 400, <<"bad_request">>, <<"malformed header line">>);
        {error, emsgsize} ->
            refuse(Conn, 431, <<"header_fields_too_large">>, too_long(<<"a header line">>));
        {error, timeout} ->
            refuse(Conn, 408, <<"request_timeout">>, <<"request headers not received in time">>);
        {error, Reason} ->
            close(Conn, Reason)
    end.

add_header_line(Conn, {Lines, _Bytes}, _LineBytes) when Lines >= ?MAX_HEADERS ->
    refuse(Conn, 431, <<"header_fields_too_large">>,
           <<"more than ", (integer_to_binary(?MAX_HEADERS))/binary, " header lines">>);
add_header_line(Conn, {_Lines, Bytes}, LineBytes) when Bytes + LineBytes > ?MAX_HEAD_BYTES ->
    refuse(Conn, 431, <<"header_fields_too_large">>,
           <<"headers exceed ", (integer_to_binary(?MAX_HEAD_BYTES))/binary, " bytes">>);
add_header_line(_Conn, {Lines, Bytes}, LineBytes) ->
    {Lines + 1, Bytes + LineBytes}.

%%====================================================================
%% Body framing and the handler
%%====================================================================

framed_request(Conn, Request, Headers) ->
    case message_framing(Headers) of
        {ok, FramedHeaders} -> respond(Conn, Request, FramedHeaders);
        {error, Why} -> refuse(Conn, 400, <<"bad_request">>, Why)
    end.

%% RFC 9112 6: a request's body is delimited by one valid Content-Length or
%% by chunked Transfer-Encoding, never both; anything else could be read two
%% ways (request smuggling), so it is refused. Repeated Content-Length
%% headers are refused even when equal (6.3 allows that). The accepted
%% value is written back trimmed, the way mochiweb parses and compares it
%% (list_to_integer/1, "chunked").
message_framing(Headers) ->
    Lengths = [string:trim(V) || {'Content-Length', V} <- Headers],
    Codings = [string:lowercase(string:trim(V)) || {'Transfer-Encoding', V} <- Headers],
    case {Lengths, Codings} of
        {[], []} ->
            {ok, Headers};
        {[Length], []} ->
            case Length =/= "" andalso lists:all(fun is_digit/1, Length) of
                true -> {ok, lists:keyreplace('Content-Length', 1, Headers, {'Content-Length', Length})};
                false -> {error, <<"Content-Length must be a non-negative decimal integer">>}
            end;
        {[_, _ | _], []} ->
            {error, <<"conflicting Content-Length headers">>};
        {[], ["chunked"]} ->
            {ok, lists:keyreplace('Transfer-Encoding', 1, Headers, {'Transfer-Encoding', "chunked"})};
        {[], _OtherCodings} ->
            {error, <<"only chunked Transfer-Encoding is supported">>};
        {_Lengths, _Codings} ->
            {error, <<"Content-Length and Transfer-Encoding together">>}
    end.

is_digit(C) -> C >= $0 andalso C =< $9.

respond(Conn = #conn{socket = Socket, opts = Opts, handler = Handler}, Request, Headers) ->
    Req = mochiweb:new_request({Socket, Opts, Request, Headers}),
    %% messaging_ws:handle_upgrade/1 never returns: the process becomes the
    %% WebSocket session.
    _ = Handler(Req),
    case mochiweb_request:should_close(Req) of
        true ->
            close(Conn, should_close);
        false ->
            mochiweb_request:cleanup(Req),
            erlang:garbage_collect(),
            request_line(Conn, keep_alive, deadline(Conn#conn.idle_timeout_ms))
    end.

%%====================================================================
%% Helpers
%%====================================================================

%% The answer to a head that cannot be served, then the close: after a
%% framing error the rest of the stream cannot be trusted.
-spec refuse(#conn{}, pos_integer(), binary(), binary()) -> no_return().
refuse(Conn = #conn{socket = Socket}, Code, ErrCode, Message) ->
    Body = jiffy:encode(messaging_http:error_body(ErrCode, Message, #{})),
    Head = [<<"HTTP/1.1 ">>, integer_to_binary(Code), $\s, reason_phrase(Code), <<"\r\n">>,
            <<"Content-Type: application/json\r\nContent-Length: ">>,
            integer_to_binary(byte_size(Body)), <<"\r\nConnection: close\r\n\r\n">>],
    _ = mochiweb_socket:send(Socket, [Head, Body]),
    close(Conn, {refused, Code}).

%% httpd_util:reason_phrase/1 does not know 431.
reason_phrase(400) -> <<"Bad Request">>;
reason_phrase(408) -> <<"Request Timeout">>;
reason_phrase(414) -> <<"URI Too Long">>;
reason_phrase(431) -> <<"Request Header Fields Too Large">>;
reason_phrase(505) -> <<"HTTP Version Not Supported">>.

too_long(What) ->
    <<What/binary, " exceeds ", (integer_to_binary(?MAX_LINE_BYTES))/binary, " bytes">>.

%% {shutdown, _} ends the process quietly, as mochiweb_http's own exits do.
-spec close(#conn{}, term()) -> no_return().
close(#conn{socket = Socket}, Reason) ->
    mochiweb_socket:close(Socket),
    exit({shutdown, Reason}).

setopts(Socket, Opts) ->
    ok = mochiweb_socket:exit_if_closed(mochiweb_socket:setopts(Socket, Opts)).

recv(Socket, Deadline) ->
    mochiweb_socket:recv(Socket, 0, max(0, Deadline - now_ms())).

deadline(TimeoutMs) ->
    now_ms() + TimeoutMs.

now_ms() ->
    erlang:monotonic_time(millisecond).
