"""Sign-in lockouts: how django-axes is wired into the portal's two sign-in pages.

Staff and hosts both sign in on Wagtail's /admin/login/ (settings.LOGIN_URL; a host's
/statement/ sends them there); superusers also have /django-admin/login/. django-axes counts
each failed sign-in in the shared cache (Redis in production) under the username and,
separately, under the client's address. After settings.LOGIN_FAILURE_LIMIT failures for
either within settings.LOGIN_LOCKOUT_MINUTES, every attempt is refused, right password or
not, until that window has passed: the page answers 429 and says so in its own error box.

The API's token endpoint is counted by its own DRF throttle (finance/api/throttling.py),
with the same limits, so axes leaves /api/ alone (`counted_elsewhere`).

The functions below are named in settings (AXES_*_CALLABLE); they read the settings on
every call, so tests can change the limits.
"""

import math
from datetime import timedelta

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.template.response import TemplateResponse
from wagtail.admin.forms.auth import LoginForm as WagtailLoginForm


def failure_limit(request=None, credentials=None) -> int:
    """AXES_FAILURE_LIMIT: failed attempts (per username, per address) before the lockout."""
    return settings.LOGIN_FAILURE_LIMIT


def lockout_window(request=None) -> timedelta:
    """AXES_COOLOFF_TIME: how long failures are remembered, and a lockout lasts."""
    return timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES)


def client_address(request) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: REMOTE_ADDR, which TrustedProxyMiddleware has already set to the
    client's own address behind a trusted proxy. Axes must not read X-Forwarded-For itself:
    anyone can send that header, and a new address per attempt would escape the lockout."""
    return request.META.get("REMOTE_ADDR") or None


def counted_elsewhere(request, credentials=None) -> bool:
    """AXES_WHITELIST_CALLABLE: the API's token endpoint has its own throttle (429 + JSON)."""
    return (getattr(request, "path", "") or "").startswith("/api/")


def lockout_message() -> str:
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    return (
        "Too many failed sign-in attempts for this account or from your network address. "
        f"Signing in is locked for up to {minutes:g} minutes; please try again later."
    )


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the sign-in page itself (its form shows `lockout_message`, see
    LockoutMessageMixin) with status 429 and Retry-After (the longest the lockout can last)."""
    if isinstance(original_response, TemplateResponse) and original_response.status_code == 200:
        response = original_response
        response.status_code = 429
    else:
        response = HttpResponse(lockout_message(), status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(math.ceil(lockout_window().total_seconds()))
    return response


class LockoutMessageMixin:
    """A locked-out attempt says so, instead of "username and password didn't match"."""

    def get_invalid_login_error(self):
        if getattr(self.request, "axes_locked_out", False):
            return ValidationError(lockout_message(), code="locked_out")
        return super().get_invalid_login_error()


class LoginForm(LockoutMessageMixin, WagtailLoginForm):
    """WAGTAILADMIN_USER_LOGIN_FORM: Wagtail's sign-in form (staff and hosts)."""


class AdminLoginForm(LockoutMessageMixin, AdminAuthenticationForm):
    """The sign-in form of /django-admin/ (portal/admin_site.py)."""
