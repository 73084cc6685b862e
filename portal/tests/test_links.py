"""portal/links.py: the row links of list pages."""

import pytest
from django.urls import reverse

from portal.links import transaction_link, url_for


@pytest.mark.parametrize(
    ("name", "argument"),
    [
        ("ops_wallets:detail", 5),
        ("ops_transactions:detail", "TXN-3F9A1C7B2D4E6F80"),
        ("ops_transactions:reverse", "TXN-AB12"),
        ("ops_transactions:detail", "a bé?#%"),
    ],
)
def test_url_for_gives_what_reverse_gives(name, argument):
    assert url_for(name, argument) == reverse(name, args=[argument])


@pytest.mark.django_db
def test_a_transaction_reference_links_only_for_people_who_may_open_it(finance_user, support_user):
    assert 'href="/admin/operations/transactions/TXN-1/"' in transaction_link("TXN-1", user=finance_user)
    plain = transaction_link("TXN-1", user=support_user)
    assert "href" not in plain and "TXN-1" in plain
    assert transaction_link("", user=finance_user) == ""
