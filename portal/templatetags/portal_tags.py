from django import template

from finance.money import format_money

register = template.Library()


@register.simple_tag
def money(amount, currency):
    if amount is None or amount == "":
        return ""
    return format_money(amount, currency)
