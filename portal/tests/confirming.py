"""Test helpers: read a confirmation out of a response and post it, as the browser would."""

import html
import json
import re

from django.core import signing

from portal.views.confirmation import SALT, TOKEN_FIELD


def confirmation_html(response) -> str:
    """The confirmation's markup, up to its Cancel."""
    text = response.content.decode()
    start = text.index("data-confirmation ")
    return text[start : text.index("data-confirmation-cancel", start)]


def confirmed_url(response) -> str:
    """Where its Yes button posts."""
    box = confirmation_html(response)
    match = re.search(r'hx-post="([^"]+)"', box) or re.search(r'<form method="post" action="([^"]+)"', box)
    return html.unescape(match.group(1))


def confirmed_fields(response) -> dict:
    """What its Yes button posts: the confirmed values and the token (hx-vals, or the form's hidden inputs)."""
    box = confirmation_html(response)
    match = re.search(r'hx-vals="([^"]*)"', box)
    if match:
        return json.loads(html.unescape(match.group(1)))
    fields: dict[str, list] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', box):
        if name != "csrfmiddlewaretoken":
            fields.setdefault(name, []).append(html.unescape(value))
    return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}


def post_confirmation(client, response, **extra):
    """Press "Yes": post the confirmation's fields to its URL."""
    return client.post(confirmed_url(response), confirmed_fields(response), **extra)


def reissue(token: str, *, params: dict | None = None, **changes) -> str:
    """A properly signed token like `token`, but bound to other values (user, action, target, params)."""
    data = signing.loads(token, salt=SALT)
    data.update(changes)
    if params:
        data["params"] = {**data["params"], **params}
    return signing.dumps(data, salt=SALT)


def token_data(token: str) -> dict:
    return signing.loads(token, salt=SALT)


__all__ = ["TOKEN_FIELD", "confirmed_fields", "confirmed_url", "post_confirmation", "reissue", "token_data"]
