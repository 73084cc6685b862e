"""The client's address behind reverse proxies (portal/middleware.py)."""

import pytest
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from portal.middleware import TrustedProxyMiddleware, client_address, parse_networks

NGINX = parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    "remote_addr, forwarded_for, expected",
    [
        # Straight from the client: the header is whatever the client wants, so it is ignored.
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
        # Through nginx: the address nginx appended.
        ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
        # The client prepended a lie; nginx's entry is the rightmost one that is not a proxy.
        ("127.0.0.1", "198.51.100.1, 203.0.113.5", "203.0.113.5"),
        # Two proxies in a row (load balancer, then nginx on 10.0.0.2).
        ("10.0.0.2", "203.0.113.5, 10.0.0.1", "203.0.113.5"),
        # IPv6 clients and proxies.
        ("::1", "2001:db8::7", "2001:db8::7"),
        # No header from a proxy: the proxy itself is all we know.
        ("127.0.0.1", "", "127.0.0.1"),
        # Garbage at the client's end of the header stops the walk at the last trusted hop.
        ("127.0.0.1", "not-an-address, 10.0.0.1", "10.0.0.1"),
    ],
)
def test_client_address(remote_addr, forwarded_for, expected):
    assert client_address(remote_addr, forwarded_for, NGINX) == expected


def _remote_addr_seen(remote_addr, forwarded_for):
    seen = {}

    def view(request):
        seen["address"] = request.META["REMOTE_ADDR"]
        return HttpResponse()

    request = RequestFactory().get("/", REMOTE_ADDR=remote_addr, HTTP_X_FORWARDED_FOR=forwarded_for)
    TrustedProxyMiddleware(view)(request)
    return seen["address"]


@override_settings(TRUSTED_PROXIES=["127.0.0.1"])
def test_the_middleware_rewrites_remote_addr_behind_a_trusted_proxy():
    assert _remote_addr_seen("127.0.0.1", "203.0.113.5") == "203.0.113.5"
    assert _remote_addr_seen("203.0.113.9", "198.51.100.1") == "203.0.113.9"


@override_settings(TRUSTED_PROXIES=[])
def test_without_trusted_proxies_the_header_is_never_read():
    assert _remote_addr_seen("127.0.0.1", "203.0.113.5") == "127.0.0.1"


def _is_secure_seen(remote_addr):
    seen = {}

    def view(request):
        seen["secure"] = request.is_secure()
        return HttpResponse()

    request = RequestFactory().get("/", REMOTE_ADDR=remote_addr, HTTP_X_FORWARDED_PROTO="https")
    TrustedProxyMiddleware(view)(request)
    return seen["secure"]


@override_settings(TRUSTED_PROXIES=["127.0.0.1"], SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_only_a_trusted_proxy_can_say_the_client_used_https():
    assert _is_secure_seen("127.0.0.1") is True
    # A client reaching an app server directly over plain HTTP cannot claim HTTPS (and get
    # secure cookies sent back over plain HTTP).
    assert _is_secure_seen("203.0.113.9") is False
