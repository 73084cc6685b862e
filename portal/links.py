"""Links to the pages money can be traced on, shown only to people who may open them."""

from django.urls import reverse
from django.utils.html import format_html

from finance import permissions


def transaction_url(reference: str) -> str:
    return reverse("ops_transactions:detail", args=[reference])


def transaction_link(reference: str, *, user) -> str:
    """`reference` as a link to its transaction page, or as plain text for someone who cannot open it."""
    if not reference:
        return ""
    if not permissions.allows(user, permissions.VIEW_TRANSACTIONS):
        return format_html('<span class="ops-ref">{}</span>', reference)
    return format_html('<a class="ops-ref" href="{}">{}</a>', transaction_url(reference), reference)
