from django import template

from finance.money import format_money

from .. import links

register = template.Library()


@register.simple_tag
def money(amount, currency):
    if amount is None or amount == "":
        return ""
    return format_money(amount, currency)


@register.simple_tag(takes_context=True)
def transaction_link(context, reference):
    """`{% transaction_link ref %}`: the reference, linked to its transaction page for those who may open it."""
    return links.transaction_link(reference, user=context["request"].user)
