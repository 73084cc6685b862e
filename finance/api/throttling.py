"""Failed sign-ins at the token endpoint, counted per username and per client address.

DRF's SimpleRateThrottle counts every request; this one counts only failures: the view calls
`record_failure` when the username and password did not match. Once either counter holds
settings.LOGIN_FAILURE_LIMIT failures from the last settings.LOGIN_LOCKOUT_MINUTES, every
request is refused before the password is even checked (the right one too), with 429 and
Retry-After: the seconds until the oldest of those failures leaves the window. Refused
attempts are not counted, so the lockout ends when the window has passed.

The history of each counter (failure times, newest first, as DRF keeps it) lives in the
default cache, shared by every process (Redis with REDIS_URL). The client address is
REMOTE_ADDR, which TrustedProxyMiddleware has already set; DRF's own `get_ident` would
believe any X-Forwarded-For header, so it is not used.
"""

import hashlib

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class FailedLoginThrottle(SimpleRateThrottle):
    scope = "failed_login"

    def __init__(self):
        # No rate string ("10/15m" is not a rate DRF parses): the limits come from settings,
        # the same ones django-axes applies to the sign-in pages (portal/security.py).
        self.rate = f"{settings.LOGIN_FAILURE_LIMIT}/{settings.LOGIN_LOCKOUT_MINUTES}min"
        self.num_requests = settings.LOGIN_FAILURE_LIMIT
        self.duration = settings.LOGIN_LOCKOUT_MINUTES * 60
        self.wait_seconds = None

    def cache_keys(self, request) -> list[str]:
        keys = [self.cache_format % {"scope": self.scope, "ident": "address:" + request.META.get("REMOTE_ADDR", "")}]
        data = request.data  # a body DRF cannot parse raises ParseError here: 400
        username = data.get("username") if hasattr(data, "get") else None
        if isinstance(username, str) and username:
            digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()
            keys.append(self.cache_format % {"scope": self.scope, "ident": "username:" + digest})
        return keys

    def _recent(self, key: str) -> list[float]:
        return [t for t in self.cache.get(key, []) if t > self.now - self.duration]

    def allow_request(self, request, view) -> bool:
        self.now = self.timer()
        waits = []
        for key in self.cache_keys(request):
            history = self._recent(key)
            if len(history) >= self.num_requests:
                # The lockout lifts when the limit-th newest failure leaves the window.
                waits.append(history[self.num_requests - 1] + self.duration - self.now)
        if waits:
            self.wait_seconds = max(1.0, max(waits))
            return False
        return True

    def wait(self) -> float | None:
        return self.wait_seconds

    def record_failure(self, request) -> None:
        """One more failed attempt for the request's username and address."""
        self.now = self.timer()
        for key in self.cache_keys(request):
            history = [self.now, *self._recent(key)]
            self.cache.set(key, history, self.duration)
