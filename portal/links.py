"""Links to the pages money can be traced on, shown only to people who may open them."""

import functools
from urllib.parse import quote

from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.utils.html import format_html
from django.utils.http import RFC3986_SUBDELIMS

from finance import permissions

# Stand-ins reversed in the argument's place: one any path converter takes, one for <int:...>.
_PLACEHOLDERS = ("__argument__", "918273645546372819")


def url_for(name: str, argument) -> str:
    """`reverse(name, args=[argument])` for a route with one argument, as a list page needs it once
    per row: the route is reversed once (per script prefix) and the argument quoted as reverse()
    quotes it. Twenty-five rows of three links each made reverse() a visible share of a list."""
    pattern, placeholder = _pattern(name, get_script_prefix())
    return pattern.replace(placeholder, quote(str(argument), safe=RFC3986_SUBDELIMS + "/~:@"))


@functools.lru_cache(maxsize=128)
def _pattern(name: str, script_prefix: str) -> tuple[str, str]:
    for placeholder in _PLACEHOLDERS:
        try:
            return reverse(name, args=[placeholder]), placeholder
        except NoReverseMatch:
            continue
    raise NoReverseMatch(f"{name} does not take one path argument")


def transaction_url(reference: str) -> str:
    return url_for("ops_transactions:detail", reference)


def transaction_link(reference: str, *, user) -> str:
    """`reference` as a link to its transaction page, or as plain text for someone who cannot open it."""
    if not reference:
        return ""
    if not permissions.allows(user, permissions.VIEW_TRANSACTIONS):
        return format_html('<span class="ops-ref">{}</span>', reference)
    return format_html('<a class="ops-ref" href="{}">{}</a>', transaction_url(reference), reference)
