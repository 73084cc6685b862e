"""The host's payout statement (portal/views/statement.py): own data only, CSV and PDF."""

import pytest

pytestmark = pytest.mark.django_db


def login(client, user):
    client.force_login(user)
    return client


def test_host_statement_own_data_csv_pdf_and_404_for_others(client, host, other_host, paid_booking):
    login(client, host)
    page = client.get("/statement/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Opening balance" in html and "Closing balance" in html and "NGN 850.00" in html
    csv = b"".join(client.get("/statement/?format=csv").streaming_content).decode()
    assert "Booking payout" in csv and ",1000.00,150.00,850.00," in csv
    pdf = client.get("/statement/?format=pdf")
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert client.get(f"/statement/{other_host.pk}/").status_code == 404
    assert client.get(f"/statement/{host.pk}/").status_code == 200


def test_staff_have_no_statement(client, finance_user):
    login(client, finance_user)
    assert client.get("/statement/").status_code == 404


def test_each_statement_reference_opens_the_hosts_own_transaction(client, host, other_host, paid_booking, guest):
    from finance.models import WalletTransaction

    payout = WalletTransaction.objects.get(booking=paid_booking, type="booking_payment")
    login(client, host)
    statement = client.get("/statement/").content.decode()
    assert f'href="/statement/{payout.reference}/"' in statement
    pdf = client.get("/statement/?format=pdf")
    assert pdf.status_code == 200  # the PDF's references link to the same pages
    page = client.get(f"/statement/{payout.reference}/")
    assert page.status_code == 200
    html = page.content.decode()
    for shown in (
        payout.reference,
        "Booking payout",
        "NGN 850.00",  # the amount credited
        "NGN 1,000.00",  # what the guest paid
        "NGN 150.00",  # the commission
        paid_booking.rental_property.title,
        guest.first_name or guest.username,
    ):
        assert shown in html, shown
    # Another host, staff, and unknown or malformed references: 404.
    login(client, other_host)
    assert client.get(f"/statement/{payout.reference}/").status_code == 404
    login(client, host)
    for reference in ("TXN-NOSUCHTHING", "X" * 40, "TXN-%00"):
        assert client.get(f"/statement/{reference}/").status_code == 404


def test_host_transaction_page_shows_a_refund_and_a_withdrawal(client, host, paid_booking, bank_account):
    from decimal import Decimal

    from finance.services import TransactionService

    refund = TransactionService.process_refund(paid_booking, Decimal("200.00"), "Guest left early")
    wallet = host.wallets.get(currency="NGN")
    TransactionService.credit_wallet(wallet, Decimal("5000.00"))
    withdrawal = TransactionService.initiate_withdrawal(wallet, bank_account, Decimal("1000.00"))
    login(client, host)
    html = client.get(f"/statement/{refund.reference}/").content.decode()
    assert "NGN -170.00" in html and "Refunded to the guest" in html and "NGN 200.00" in html
    assert "Commission returned by StayAfrica" in html and "NGN 30.00" in html
    html = client.get(f"/statement/{withdrawal.transaction.reference}/").content.decode()
    assert withdrawal.reference in html and "GTBank •••• 4321" in html and "Pending" in html


def test_staff_cannot_open_a_host_transaction_page(client, finance_user, paid_booking):
    from finance.models import WalletTransaction

    payout = WalletTransaction.objects.get(booking=paid_booking)
    login(client, finance_user)
    assert client.get(f"/statement/{payout.reference}/").status_code == 404
