"""The request id every log line carries, and the client's real address behind reverse proxies.

RequestIdMiddleware: each request gets an id, the one nginx (or a client) sent in X-Request-Id
when it is acceptable, else a new one. It is in every log line the request causes (including
lines logged deep in services), in the calls made to the messaging service, and in the answer's
X-Request-Id, so an operator can go from a user's report or nginx's log to every line.

TrustedProxyMiddleware: the client's real address when the portal runs behind reverse proxies (nginx).

A proxy connects to gunicorn itself, so REMOTE_ADDR is the proxy's address; it passes the
client's address on in X-Forwarded-For (nginx: `$proxy_add_x_forwarded_for` appends the
address it saw to whatever the client sent). Anyone can send that header, so it is
believed only as far as it was written by proxies we trust: walking it from the right,
each entry was appended by the hop after it, and the first address that is not a trusted
proxy is the client. A request whose connection does not come from a trusted proxy keeps
its REMOTE_ADDR, whatever headers it carries, so nobody picks their own address.

Django has no such middleware and the usual packages read the header without checking
the connection's peer, hence these few lines. Everything after this middleware (the
webhook verification limit, logs, the audit) reads REMOTE_ADDR as usual.
"""

import ipaddress

from django.conf import settings
from django.core.signals import request_finished
from django.shortcuts import redirect

import request_context

from .roles import ACCESS_ADMIN

REQUEST_ID_HEADER = "X-Request-Id"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: list[str]) -> list[IPNetwork]:
    """'10.0.0.5' or '10.0.0.0/8' or '::1' → networks; a bad entry is a configuration error."""
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def _parse_address(text: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def is_trusted(address, proxies: list[IPNetwork]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_address(remote_addr: str, forwarded_for: str, proxies: list[IPNetwork]) -> str:
    """The client's address: REMOTE_ADDR unless it is a trusted proxy, then the header's
    rightmost address that is not one."""
    address = _parse_address(remote_addr)
    if not is_trusted(address, proxies):
        return remote_addr
    for entry in reversed(forwarded_for.split(",")):
        hop = _parse_address(entry)
        if hop is None:
            # Garbage can only come from the client's own part of the header: the last
            # proxy we trust saw it come from `address`.
            break
        address = hop
        if not is_trusted(hop, proxies):
            break
    return str(address)


class TrustedProxyMiddleware:
    """Sets REMOTE_ADDR to the client's address behind TRUSTED_PROXIES (see the module doc).

    The same goes for the header that says the client used HTTPS (SECURE_PROXY_SSL_HEADER,
    `X-Forwarded-Proto: https`): from a connection that is not a trusted proxy it is
    dropped, so a client talking plain HTTP to an app server directly cannot claim HTTPS
    and receive secure cookies over it. Without TRUSTED_PROXIES both headers are left to
    the load balancer, which must then be the only way in and overwrite them."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.proxies = parse_networks(settings.TRUSTED_PROXIES)
        ssl_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
        self.ssl_header_name = ssl_header[0] if ssl_header else None

    def __call__(self, request):
        if self.proxies:
            peer = request.META.get("REMOTE_ADDR", "")
            if self.ssl_header_name and not is_trusted(_parse_address(peer), self.proxies):
                request.META.pop(self.ssl_header_name, None)
            request.META["REMOTE_ADDR"] = client_address(
                peer, request.META.get("HTTP_X_FORWARDED_FOR", ""), self.proxies
            )
        return self.get_response(request)


class RequestIdMiddleware:
    """Binds the request id (see the module doc) for as long as the request is served.

    Bound until Django's request_finished, not only until this middleware returns: Django logs
    a 4xx answer (django.request WARNING) after the last middleware has returned, and that line
    must carry the id too."""

    def __init__(self, get_response):
        self.get_response = get_response
        request_finished.connect(_request_served, dispatch_uid="portal.middleware.request_id")

    def __call__(self, request):
        request_id = request_context.valid_request_id(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id or request_context.new_request_id()
        request_context.begin(request.request_id, request)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request.request_id
        return response


def _request_served(sender, **kwargs) -> None:
    request_context.end()


class HostsToStatementMiddleware:
    """A signed-in host who reaches the staff admin (/admin/, or any page under it, also right
    after signing in on /admin/login/) is sent to their statement, the one page that is theirs,
    instead of Wagtail's "You do not have permission to access the admin" and its sign-in form.

    Only GET and HEAD: a form posted there (signing in as someone else) goes through. Signing
    out and resetting a password stay reachable."""

    ADMIN_PREFIX = "/admin/"
    LEFT_ALONE = ("/admin/logout/", "/admin/password_reset/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if self.sends_to_statement(request):
            return redirect("host_statement")
        return self.get_response(request)

    def sends_to_statement(self, request) -> bool:
        path = request.path
        if request.method not in ("GET", "HEAD") or not path.startswith(self.ADMIN_PREFIX):
            return False
        if path.startswith(self.LEFT_ALONE):
            return False
        user = request.user
        return user.is_authenticated and getattr(user, "role", "") == "host" and not user.has_perm(ACCESS_ADMIN)
