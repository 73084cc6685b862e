"""Bearer tokens for the API: django-rest-knox, `Authorization: Bearer <token>`.

Knox stores only a SHA-512 digest of each token, gives it an expiry (settings.REST_KNOX
TOKEN_TTL, from API_TOKEN_TTL_DAYS) and deletes it on revocation; an expired, revoked or
unknown token is 401 with the API's JSON error shape and `WWW-Authenticate: Bearer`.
"""

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication
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


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Declares the bearer scheme in the OpenAPI schema (drf-spectacular's knox extension
    matches knox's own class only, not this subclass), so clients and schemathesis see it."""

    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")
