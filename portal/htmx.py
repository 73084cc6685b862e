"""An htmx request the session no longer covers sends the whole browser to the sign-in page.

Without this, the redirect to /admin/login/ that Wagtail (or Django's login_required) answers
is followed by htmx's XMLHttpRequest, and the sign-in form is swapped into the table row or
the region the request aimed at. Instead the answer becomes htmx's HX-Redirect, whose `next`
is the page the user was on (django-htmx's `current_url_abs_path`: HX-Current-URL's path and
query, only when it is this site's own address), so signing in brings them back there.
"""

from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.shortcuts import resolve_url
from django_htmx.http import HttpResponseClientRedirect


def login_path() -> str:
    """The sign-in page's path: Wagtail's (where staff and hosts sign in), else Django's."""
    return urlsplit(resolve_url(getattr(settings, "WAGTAILADMIN_LOGIN_URL", None) or settings.LOGIN_URL)).path


def is_login_redirect(response) -> bool:
    return response.status_code in (301, 302, 303, 307) and urlsplit(response.get("Location", "")).path == login_path()


def login_url_back_to(current_path: str | None) -> str:
    """The sign-in page, with `next` = the page the user was on when there is one."""
    if not current_path:
        return login_path()
    return f"{login_path()}?{urlencode({'next': current_path})}"


class HtmxLoginRedirectMiddleware:
    """Turns a redirect to the sign-in page, answered to an htmx request, into HX-Redirect.

    Placed after django_htmx's HtmxMiddleware, which sets `request.htmx`."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.htmx and is_login_redirect(response):
            return HttpResponseClientRedirect(login_url_back_to(request.htmx.current_url_abs_path))
        return response
