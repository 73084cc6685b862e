"""API tokens: the one place that knows how a user's bearer token is made.

Tests and the token endpoint both go through `issue_api_token`, so the token store can
change without touching its callers. The store is django-rest-knox: each call makes a new
token (one per client), kept only as a digest, valid settings.REST_KNOX["TOKEN_TTL"].
Expired tokens are refused (finance/api/authentication.py) and deleted when they are used,
or when their user is issued a new one.
"""

from django.utils import timezone
from knox.models import AuthToken


def issue_token(user) -> AuthToken:
    """A new token for `user`: the stored row, with the plain value (shown once) as `.plain`.
    The user's expired tokens are deleted first: nobody can use them any more."""
    AuthToken.objects.filter(user=user, expiry__lt=timezone.now()).delete()
    instance, plain = AuthToken.objects.create(user=user)
    instance.plain = plain
    return instance


def issue_api_token(user) -> str:
    """A bearer token for `user` (the value a client sends after `Bearer `)."""
    return issue_token(user).plain


def revoke_token(token: AuthToken) -> int:
    """Revoke one token (the one a request authenticated with); the number revoked."""
    deleted, _ = AuthToken.objects.filter(pk=token.pk).delete()
    return deleted


def revoke_all_tokens(user) -> int:
    """Revoke every token of `user`; the number revoked."""
    deleted, _ = AuthToken.objects.filter(user=user).delete()
    return deleted
