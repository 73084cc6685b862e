"""Bearer tokens for the API: django-rest-knox, `Authorization: Bearer <token>`.

Knox stores only a SHA-512 digest of each token, gives it an expiry (settings.REST_KNOX
TOKEN_TTL, from API_TOKEN_TTL_DAYS) and deletes it on revocation; an expired, revoked or
unknown token is 401 with the API's JSON error shape and `WWW-Authenticate: Bearer`.

An authenticated request costs one query: the token with its user. (Knox also reads every
other token of the user on each request, to delete the expired ones; here that sweep runs
when a new token is issued, finance/api/tokens.py.)
"""

import re

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication
from knox.signals import token_expired
from rest_framework import exceptions

# What knox hands out (64 hex digits, no prefix configured). Anything else is refused before
# it reaches the database: knox would fail on a non-UTF-8 header, PostgreSQL on a NUL byte.
TOKEN_SHAPE = re.compile(rb"[0-9A-Za-z_\-]{1,128}")
INVALID = "Invalid token: unknown, expired or revoked. Ask POST /api/payments/auth/token/ for a new one."


class BearerTokenAuthentication(TokenAuthentication):
    """Per-user API tokens sent as `Authorization: Bearer <token>` (the scheme mobile clients use)."""

    def authenticate_credentials(self, token: bytes):
        if not TOKEN_SHAPE.fullmatch(token):
            raise exceptions.AuthenticationFailed(INVALID)
        try:
            return super().authenticate_credentials(token)
        except exceptions.AuthenticationFailed as error:
            if str(error.detail) == "Invalid token.":
                raise exceptions.AuthenticationFailed(INVALID) from None
            raise

    def _cleanup_token(self, auth_token) -> bool:
        """Whether the token has expired (it is then deleted, as knox does). Knox's own version
        first reads all the user's other tokens to delete the expired ones, a second query on
        every request; issuing a token sweeps them instead (tokens.issue_token)."""
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            username = auth_token.user.get_username()
            auth_token.delete()
            token_expired.send(sender=self.__class__, username=username, source="auth_token")
            return True
        return False


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Declares the bearer scheme in the OpenAPI schema (drf-spectacular's knox extension
    matches knox's own class only, not this subclass), so clients and schemathesis see it."""

    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")
