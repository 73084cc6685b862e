"""Template filters of the host statement (page and PDF)."""

from django import template

from finance.money import round_money

register = template.Library()


@register.filter
def amount(value, currency):
    """`{{ value|amount:"NGN" }}` -> "1,000.00": at the currency's precision, without its code,
    for table columns whose heading already names the currency. None (an empty cell) stays empty."""
    if value is None or value == "":
        return ""
    return f"{round_money(value, currency):,}"
