"""What the audit log records besides the staff actions: sign-ins, sign-outs, failed sign-ins,
lockouts and exports. (Refusals, "stayafrica.access.denied", are finance.audit.log_denied's.)

Each event is one row of Wagtail's log, written with `wagtail.log_actions.log` against an
instance: the person concerned (who signed in, who was refused, who exported), or, for a
failed sign-in under a username no account has, the fixed AuditTarget "Sign-in".

A flood of failed sign-ins cannot fill the table without bound:
- django-axes locks a username, and separately a client address, after LOGIN_FAILURE_LIMIT
  failures within LOGIN_LOCKOUT_MINUTES. The failures it counts are recorded one by one; the
  attempts it then refuses are not: one "Sign-in locked out" row per username and address stands
  for the whole lockout (a cache key remembers it was written).
- Across the site, at most LOGIN_FAILURES_RECORDED_PER_HOUR failed sign-ins are recorded per
  hour (a cache counter; many addresses each below the lockout). The first one over the limit
  writes a row that says further failures that hour were not recorded.
So an attacker buys at most (limit + 1) rows per address per lockout window, and the whole site
at most the hourly limit + 1 rows per hour, whatever the rate of attempts.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.utils import timezone
from wagtail.log_actions import log

from .models import AuditTarget

# Registered with Wagtail's log action registry by portal/wagtail_hooks.py.
ACTIONS = {
    "stayafrica.auth.login": ("Sign-in", "Signed in"),
    "stayafrica.auth.logout": ("Sign-out", "Signed out"),
    "stayafrica.auth.login_failed": ("Failed sign-in", "Failed to sign in"),
    "stayafrica.auth.lockout": ("Sign-in locked out", "Was locked out of signing in after repeated failures"),
    "stayafrica.export": ("Export", "Exported a list as CSV"),
}

SIGN_IN = "Sign-in"
USERNAME_LENGTH = 150  # what is kept of a username tried (the field's own length)


def failures_per_hour() -> int:
    return settings.LOGIN_FAILURES_RECORDED_PER_HOUR


def client_ip(request) -> str:
    """REMOTE_ADDR: TrustedProxyMiddleware has set it to the client's own address."""
    return (request.META.get("REMOTE_ADDR") or "") if request is not None else ""


def _path(request) -> str:
    return getattr(request, "path", "") or ""


def _sign_in_target() -> AuditTarget:
    target, _ = AuditTarget.objects.get_or_create(name=SIGN_IN)
    return target


def _account(username: str):
    """The account `username` names, if any (what a failed sign-in was aimed at)."""
    if not username:
        return None
    User = get_user_model()
    return User.objects.filter(**{User.USERNAME_FIELD: username}).first()


def _tried_username(credentials) -> str:
    """The username tried, never the password (Django has already masked it; it is not read)."""
    username = (credentials or {}).get(get_user_model().USERNAME_FIELD) or (credentials or {}).get("username") or ""
    return str(username)[:USERNAME_LENGTH]


def _log_failure(action: str, username: str, request, **data) -> None:
    account = _account(username)
    entry = {"username": username, "ip": client_ip(request), "path": _path(request), **data}
    if account is not None:
        log(account, action, user=None, data=entry)
    else:
        log(
            _sign_in_target(),
            action,
            user=None,
            title=f"{SIGN_IN} as “{username}”" if username else SIGN_IN,
            data=entry,
        )


@receiver(user_logged_in, dispatch_uid="portal.audit.logged_in")
def record_login(sender, request, user, **kwargs):
    log(
        user,
        "stayafrica.auth.login",
        user=user,
        data={"username": user.get_username(), "ip": client_ip(request), "path": _path(request)},
    )


@receiver(user_logged_out, dispatch_uid="portal.audit.logged_out")
def record_logout(sender, request, user, **kwargs):
    if user is None or not getattr(user, "pk", None):  # signing out without having signed in
        return
    log(user, "stayafrica.auth.logout", user=user, data={"username": user.get_username(), "ip": client_ip(request)})


@receiver(user_login_failed, dispatch_uid="portal.audit.login_failed")
def record_login_failed(sender, credentials, request=None, **kwargs):
    if getattr(request, "axes_locked_out", False):
        return  # refused by the lockout: the lockout's own row stands for it (record_lockout)
    hour = timezone.now().strftime("%Y%m%d%H")
    key = f"audit:login_failed:{hour}"
    cache.add(key, 0, timeout=2 * 3600)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=2 * 3600)
        count = 1
    limit = failures_per_hour()
    if count > limit + 1:
        return
    if count == limit + 1:
        _log_failure(
            "stayafrica.auth.login_failed",
            _tried_username(credentials),
            request,
            note=f"More than {limit} failed sign-ins this hour: further failures this hour are not recorded.",
        )
        return
    _log_failure("stayafrica.auth.login_failed", _tried_username(credentials), request)


def _connect_axes():
    """django-axes' lockout signal (connected here, not at import: axes is an installed app)."""
    from axes.signals import user_locked_out

    @receiver(user_locked_out, dispatch_uid="portal.audit.locked_out")
    def record_lockout(sender, request=None, username=None, ip_address=None, **kwargs):
        # axes sends this when it locks someone out and again on every refused attempt: one row per lockout.
        username = str(username or "")[:USERNAME_LENGTH]
        window = settings.LOGIN_LOCKOUT_MINUTES * 60
        if not cache.add(f"audit:lockout:{username}:{ip_address}", 1, timeout=window):
            return
        _log_failure(
            "stayafrica.auth.lockout",
            username,
            request,
            note=f"Signing in is refused for up to {settings.LOGIN_LOCKOUT_MINUTES} minutes.",
        )

    return record_lockout


record_lockout = _connect_axes()


def record_export(request, *, list_name: str, rows: int, complete: bool) -> None:
    """Who exported which list, with which filters (the query string), and how many rows.

    Called when the stream ends (stream_csv's on_finish), so the row count is the number sent;
    `complete` is False when the download stopped early (the rows sent so far have left anyway)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return
    user = getattr(user, "_wrapped", user)
    query = request.GET.copy()
    for name in ("export", "page"):
        query.pop(name, None)
    filters = {name: query.getlist(name)[-1] for name in query if query.getlist(name)[-1] != ""}
    url = request.path + (f"?{query.urlencode()}" if query else "")
    log(
        user,
        "stayafrica.export",
        user=user,
        title=list_name,
        data={
            "username": user.get_username(),
            "list": list_name,
            "filters": filters,
            "url": url,
            "rows": rows,
            "complete": complete,
        },
    )
