"""Django's admin (/django-admin/): a superuser can look at the ledger but can never write it."""

from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group

from finance.models import LedgerEntry, WalletTransaction

pytestmark = pytest.mark.django_db

CHANGELIST = "/django-admin/finance/wallettransaction/"


@pytest.fixture
def superuser_client(client, make_user):
    client.force_login(make_user(superuser=True))
    return client


@pytest.fixture
def txn(funded_wallet):
    return funded_wallet.transactions.get()


def snapshot(txn):
    """What a write through the admin would touch: the row itself, the journal, the wallet."""
    fresh = WalletTransaction.objects.get(pk=txn.pk)
    fresh.wallet.refresh_from_db()
    return (
        {f.attname: getattr(fresh, f.attname) for f in WalletTransaction._meta.concrete_fields},
        fresh.wallet.balance,
        WalletTransaction.objects.count(),
        LedgerEntry.objects.count(),
    )


def test_superuser_sees_the_changelist_without_an_add_link(superuser_client, txn):
    response = superuser_client.get(CHANGELIST)

    assert response.status_code == 200
    assert txn.reference in response.content.decode()
    assert f'href="{CHANGELIST}add/"' not in response.content.decode()
    assert not response.context["has_add_permission"]


def test_the_change_page_shows_the_row_read_only(superuser_client, txn):
    response = superuser_client.get(f"{CHANGELIST}{txn.pk}/change/")

    assert response.status_code == 200
    assert txn.reference in response.content.decode()
    assert not response.context["has_change_permission"]
    assert 'name="_save"' not in response.content.decode()


def test_the_add_page_is_refused(superuser_client, txn):
    before = snapshot(txn)

    assert superuser_client.get(f"{CHANGELIST}add/").status_code == 403
    response = superuser_client.post(
        f"{CHANGELIST}add/",
        {"wallet": txn.wallet_id, "type": "credit", "status": "completed", "direction": "in", "amount": "5.00"},
    )

    assert response.status_code == 403
    assert snapshot(txn) == before


def test_posting_the_change_form_changes_nothing(superuser_client, txn):
    before = snapshot(txn)

    response = superuser_client.post(
        f"{CHANGELIST}{txn.pk}/change/",
        {
            "reference": txn.reference,
            "wallet": txn.wallet_id,
            "type": txn.type,
            "status": "reversed",
            "direction": txn.direction,
            "amount": "999999.00",
            "currency": txn.currency,
            "balance_after": "999999.00",
            "_save": "Save",
        },
    )

    assert response.status_code == 403
    assert snapshot(txn) == before
    assert WalletTransaction.objects.get(pk=txn.pk).amount == Decimal("10000.00")


def test_the_delete_view_is_refused(superuser_client, txn):
    before = snapshot(txn)

    assert superuser_client.get(f"{CHANGELIST}{txn.pk}/delete/").status_code == 403
    assert superuser_client.post(f"{CHANGELIST}{txn.pk}/delete/", {"post": "yes"}).status_code == 403
    assert snapshot(txn) == before


def test_the_bulk_delete_action_is_neither_offered_nor_carried_out(superuser_client, txn):
    before = snapshot(txn)

    page = superuser_client.get(CHANGELIST).content.decode()
    assert "delete_selected" not in page
    superuser_client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [txn.pk], "post": "yes"})

    assert snapshot(txn) == before


def test_library_models_in_the_django_admin_are_read_only_too(superuser_client, make_user):
    """Groups (the staff roles), API tokens, tags, images, documents: no writes through here either."""
    superuser = make_user(superuser=True)
    request = type("Request", (), {"user": superuser})()
    assert len(admin.site._registry) > 1
    for model, model_admin in admin.site._registry.items():
        assert model_admin.has_view_permission(request), model
        assert not model_admin.has_add_permission(request), model
        assert not model_admin.has_change_permission(request), model
        assert not model_admin.has_delete_permission(request), model

    group = Group.objects.first()
    response = superuser_client.post(f"/django-admin/auth/group/{group.pk}/change/", {"name": "Renamed"})
    assert response.status_code == 403
    assert Group.objects.get(pk=group.pk).name == group.name
