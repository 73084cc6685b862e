from django import template
from django.utils.formats import localize
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import mark_safe
from django.utils.timezone import template_localtime

from finance.money import format_money

from .. import links

register = template.Library()


@register.simple_tag
def money(amount, currency):
    if amount is None or amount == "":
        return ""
    return format_money(amount, currency)


def balance_html(amount, currency):
    """A wallet balance as staff read it: below zero it is red and signed before the currency
    with a true minus ("−NGN 7,200.00"), so it cannot be read as money the host has."""
    if amount is None or amount == "":
        return ""
    if amount >= 0:
        return format_money(amount, currency)
    return format_html('<span class="ops-negative">\u2212{}</span>', format_money(-amount, currency))


@register.simple_tag
def balance(amount, currency):
    """`{% balance wallet.available_balance wallet.currency %}`: see balance_html."""
    return balance_html(amount, currency)


@register.simple_tag(takes_context=True)
def transaction_link(context, reference):
    """`{% transaction_link ref %}`: the reference, linked to its transaction page for those who may open it."""
    return links.transaction_link(reference, user=context["request"].user)


@register.simple_tag
def table_body_rows(table):
    """The `<tr>` rows of a django-tables2 page, as `includes/table.html` used to write them with a
    template loop per cell: the same markup, built here. Each column's `<td ...>` is worked out once
    per page instead of once per cell (attributes that depend on the row are still worked out per
    cell); the template loop was most of a list page's rendering time."""
    columns = list(table.columns)
    openers = [None if _td_attrs_depend_on_row(table, column) else _td_opener(column) for column in columns]
    rows = []
    for row in table.paginated_rows:
        cells = []
        for column, opener in zip(columns, openers, strict=True):
            value = row.get_cell(column.name)
            if opener is None:
                column.current_value, column.current_record = value, row.record
                opener = _td_opener(column)
            cells.append(opener + conditional_escape(localize(template_localtime(value))) + "</td>")
        rows.append(format_html("<tr {}>{}</tr>", row.attrs.as_html(), mark_safe("".join(cells))))
    return mark_safe("\n".join(rows))


def _td_opener(column) -> str:
    return format_html('<td {} data-label="{}">', column.attrs["td"].as_html(), column.header)


def _td_attrs_depend_on_row(table, column) -> bool:
    attrs = {**table.attrs, **column.column.attrs}
    td = attrs.get("td", attrs.get("cell", {}))
    return any(callable(value) for value in td.values())
