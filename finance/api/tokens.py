"""API tokens: the one place that knows how a user's bearer token is made.

Tests and the token endpoint both go through `issue_api_token`, so the token store can
change (hashing, expiry) without touching its callers.
"""

from rest_framework.authtoken.models import Token


def issue_api_token(user) -> str:
    """A bearer token for `user` (the value a client sends after `Bearer `)."""
    token, _ = Token.objects.get_or_create(user=user)
    return token.key
