from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """Per-user API tokens sent as `Authorization: Bearer <token>` (the scheme mobile clients use)."""

    keyword = "Bearer"
