"""The host's payout statement (portal/views/statement.py): own data only, CSV and PDF."""

import re

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


# --- the PDF a bank would print, and the page's summary --------------------------------------

A4_WIDTH, A4_HEIGHT = 595.28, 841.89  # points
LONG_DESCRIPTION = (
    "Adjustment agreed with the host after the cleaning-fee dispute over the long weekend stay, "
    "ticket SUPPORT-REFERENCE-0000000000000000000000000000000001 (see the conversation)"
)


@pytest.fixture
def busy_host(host, guest, make_booking, make_payment, bank_account):
    """A host with several pages of movements in NGN and TND: large booking payouts, a refund,
    credits with long descriptions (one unbroken 60-character token), a completed withdrawal and a
    pending one (held)."""
    from decimal import Decimal

    from finance.services import TransactionService

    def pay(currency, total, commission):
        booking = make_booking(host, guest, total=total, commission=commission, currency=currency)
        TransactionService.process_booking_payment(booking, make_payment(booking))
        return booking

    ngn_bookings = [pay("NGN", "12345678.90", "1851851.84") for _ in range(15)]
    TransactionService.process_refund(ngn_bookings[0], Decimal("2000000.00"), "Guest left early")
    ngn = host.wallets.get(currency="NGN")
    for n in range(15):
        TransactionService.credit_wallet(ngn, Decimal("1234567.89"), description=f"{LONG_DESCRIPTION} #{n}")
    TransactionService.debit_wallet(ngn, Decimal("99.99"), description="Bank charge on a failed payout")
    done = TransactionService.initiate_withdrawal(ngn, bank_account, Decimal("5000000.00"))
    TransactionService.complete_withdrawal(done)
    TransactionService.initiate_withdrawal(ngn, bank_account, Decimal("750000.00"))  # pending: held
    for _ in range(10):
        pay("TND", "98765.432", "14814.815")
    tnd = host.wallets.get(currency="TND")
    TransactionService.credit_wallet(tnd, Decimal("0.001"), description="X" * 60)
    return host


def _pdf_pages(content):
    import io

    import pdfplumber

    with pdfplumber.open(io.BytesIO(content)) as pdf:
        return [(page.width, page.height, page.extract_words(), page.extract_text()) for page in pdf.pages]


def test_every_word_of_a_long_pdf_statement_lies_inside_the_a4_page(client, busy_host, settings):
    from datetime import timedelta

    from django.utils import timezone

    from portal.selectors import host_statement
    from portal.views.statement import statement_number

    settings.STATEMENT_COMPANY_NAME = "StayAfrica Test Ltd"
    settings.STATEMENT_COMPANY_ADDRESS = ["1 Marina Road", "Lagos"]
    login(client, busy_host)
    response = client.get("/statement/?format=pdf")
    assert response.status_code == 200

    pages = _pdf_pages(response.content)
    assert len(pages) >= 2, "the test needs a statement of several pages"
    for number, (width, height, words, _text) in enumerate(pages, start=1):
        assert (round(width, 2), round(height, 2)) == (A4_WIDTH, A4_HEIGHT)
        assert words, f"page {number} has no text"
        for word in words:
            inside = 0 <= word["x0"] and word["x1"] <= A4_WIDTH and 0 <= word["top"] and word["bottom"] <= A4_HEIGHT
            assert inside, f"page {number}: {word['text']!r} at x {word['x0']:.1f}-{word['x1']:.1f} leaves the page"

    text = "\n".join(page[3] for page in pages)
    today = timezone.localdate()
    start = today - timedelta(days=30)  # the default period
    assert statement_number(busy_host, start, today) in text
    assert "StayAfrica Test Ltd" in text and "1 Marina Road" in text
    assert f"Issued {today:%-d %b %Y}" in text
    for n in range(1, len(pages) + 1):
        assert f"Page {n} of {len(pages)}" in text
    # Each currency's summary box, figures as the selector computed them at its precision.
    for s in host_statement(busy_host, start, today):
        summary = s.summary.rounded()
        for figure in (summary.opening, summary.payouts, summary.commission, summary.withdrawals, summary.closing):
            assert f"{s.currency} {figure:,}" in text, (s.currency, figure)
    assert "NGN -2,000,000.00" in text  # the refund line of the summary
    assert "Balance" in text and "Booking total" in text


def test_the_summary_adds_up_to_the_closing_balance_of_the_table(busy_host):
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from portal.selectors import host_statement

    today = timezone.localdate()
    statements = {s.currency: s for s in host_statement(busy_host, today - timedelta(days=1), today)}
    ngn, tnd = statements["NGN"].summary, statements["TND"].summary
    # 15 payouts of 12,345,678.90 (booking totals) less 1,851,851.84 commission each; one refund
    # of 2,000,000.00 to the guest, of which StayAfrica returns its share of the commission.
    assert ngn.payouts == Decimal("185185183.50")
    assert ngn.refunds == Decimal("-2000000.00")
    clawback = Decimal(
        busy_host.wallets.get(currency="NGN").transactions.get(type="refund").metadata["commission_clawback"]
    )
    assert ngn.commission == Decimal("-27777777.60") + clawback
    assert ngn.withdrawals == Decimal("-5000000.00")  # the pending one is held, not yet on the statement
    assert ngn.adjustments == Decimal("1234567.89") * 15 - Decimal("99.99")
    for s in statements.values():
        rounded = s.summary.rounded()
        assert s.summary.closing == s.closing == s.lines[-1].balance
        assert rounded.closing == s.closing.quantize(rounded.opening)  # opening + movements = closing
    assert tnd.payouts == Decimal("987654.320") and tnd.commission == Decimal("-148148.150")
    assert str(tnd.rounded().closing) == "839506.171"  # TND has three decimals


def test_the_statement_page_shows_held_and_available_balances_and_the_summary(client, busy_host):
    login(client, busy_host)
    html = client.get("/statement/").content.decode()
    wallet = busy_host.wallets.get(currency="NGN")
    assert wallet.held_balance == 750000
    assert "Held for pending withdrawals" in html and "NGN 750,000.00" in html
    assert "Available to withdraw" in html and "NGN 168,475,824.26" in html  # the balance less what is held
    assert wallet.available_balance == wallet.balance - 750000
    assert 'data-summary="commission"' in html and "StayAfrica commission" in html
    assert "Refunds to guests" in html and "NGN -2,000,000.00" in html


def test_period_presets_link_to_this_month_last_month_and_this_year(client, host, paid_booking):
    from datetime import date

    from django.utils import timezone

    from portal.views.statement import period_presets

    today = timezone.localdate()
    login(client, host)
    html = client.get("/statement/").content.decode()
    for preset in period_presets(today):
        assert f'href="?start={preset.start:%Y-%m-%d}&amp;end={preset.end:%Y-%m-%d}"' in html, preset.label
        assert preset.label in html
    presets = {p.label: p for p in period_presets(date(2026, 3, 15))}
    assert (presets["This month"].start, presets["This month"].end) == (date(2026, 3, 1), date(2026, 3, 15))
    assert (presets["Last month"].start, presets["Last month"].end) == (date(2026, 2, 1), date(2026, 2, 28))
    assert (presets["This year"].start, presets["This year"].end) == (date(2026, 1, 1), date(2026, 3, 15))
    january = {p.label: p for p in period_presets(date(2027, 1, 10))}["Last month"]
    assert (january.start, january.end) == (date(2026, 12, 1), date(2026, 12, 31))
    # The preset that matches the period shown is marked as the current one.
    this_month = period_presets(today)[0]
    html = client.get(f"/statement/?start={this_month.start:%Y-%m-%d}&end={this_month.end:%Y-%m-%d}").content.decode()
    assert 'aria-current="true">This month' in html


def test_the_statement_number_is_stable_for_a_host_and_period(host):
    from datetime import date

    from portal.views.statement import statement_number

    number = statement_number(host, date(2026, 1, 1), date(2026, 1, 31))
    assert number == f"ST-{host.pk}-20260101-20260131"
    assert statement_number(host, date(2026, 1, 1), date(2026, 1, 31)) == number


def test_a_bad_period_answers_with_a_readable_message_not_an_error(client, host):
    login(client, host)
    for query in ("start=2026-02-01&end=2026-01-01", "start=yesterday&end=x", "start=2026-13-45"):
        response = client.get(f"/statement/?{query}")
        assert response.status_code == 200
    html = client.get("/statement/?start=2026-02-01&end=2026-01-01").content.decode()
    assert "The start of the period must come before its end." in html
    pdf = client.get("/statement/?start=2026-02-01&end=2026-01-01&format=pdf")
    assert pdf.status_code == 200  # the default period, as the page shows


def test_a_host_signs_out_from_the_statement(client, host):
    """The Sign out button on every host page ends the session (Wagtail's own sign-out answers
    only people with admin access, which hosts have not)."""
    login(client, host)
    page = client.get("/statement/").content.decode()
    action = re.search(
        r'<form method="post" action="([^"]+)"[^>]*>\s*<input type="hidden" name="csrfmiddlewaretoken"', page
    )
    assert action, "the host header has a Sign out form"
    response = client.post(action.group(1))
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
    assert client.get("/statement/")["Location"].startswith("/admin/login/")
