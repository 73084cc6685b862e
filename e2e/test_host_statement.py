"""The host statement a bank would print (issue 16, §2): the PDF fits A4 with a summary and a
statement number; the page shows held and available money, period presets, and a card per
movement on a phone; hosts sign in on a StayAfrica-branded page."""

import io
import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from .conftest import PHONE, TIMEOUT_MS, shots

pytestmark = pytest.mark.django_db(transaction=True)

A4_WIDTH, A4_HEIGHT = 595.28, 841.89  # points
LONG_DESCRIPTION = "Goodwill credit after the cleaning-fee dispute, ticket SUPPORT-" + "0" * 40 + "17"


@pytest.fixture
def statement_host(host, guest, make_booking, make_payment, bank_account):
    """This month: three large NGN payouts, a credit with a long description, a completed
    withdrawal and a pending one of 750,000.00 (held); one TND payout."""
    from finance.services import TransactionService

    for _ in range(3):
        booking = make_booking(host, guest, total="12345678.90", commission="1851851.84")
        TransactionService.process_booking_payment(booking, make_payment(booking))
    ngn = host.wallets.get(currency="NGN")
    TransactionService.credit_wallet(ngn, Decimal("1234567.89"), description=LONG_DESCRIPTION)
    done = TransactionService.initiate_withdrawal(ngn, bank_account, Decimal("5000000.00"))
    TransactionService.complete_withdrawal(done)
    TransactionService.initiate_withdrawal(ngn, bank_account, Decimal("750000.00"))
    booking = make_booking(host, guest, total="98765.432", commission="14814.815", currency="TND")
    TransactionService.process_booking_payment(booking, make_payment(booking))
    return host


def page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_the_host_downloads_a_pdf_statement_that_fits_a4_with_a_summary(open_as, statement_host):
    import pdfplumber

    page = open_as(statement_host, "/statement/")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download PDF").click()
    with pdfplumber.open(io.BytesIO(info.value.path().read_bytes())) as pdf:
        pages = [(p.extract_words(), p.extract_text()) for p in pdf.pages]
    for words, _ in pages:
        for word in words:
            assert 0 <= word["x0"] and word["x1"] <= A4_WIDTH, f"{word['text']!r} leaves the page sideways"
            assert 0 <= word["top"] and word["bottom"] <= A4_HEIGHT, f"{word['text']!r} leaves the page"
    text = "\n".join(t for _, t in pages)
    assert re.search(rf"Statement number ST-{statement_host.pk}-\d{{8}}-\d{{8}}", text)
    assert "Booking payouts (booking totals) NGN 37,037,036.70" in text
    assert "StayAfrica commission NGN -5,555,555.52" in text
    assert "Withdrawals NGN -5,000,000.00" in text
    assert "Balance" in text and f"Page 1 of {len(pages)}" in text


def test_presets_held_and_available_money_and_phone_cards(open_as, statement_host):
    page = open_as(statement_host, "/statement/")
    ngn = page.locator("section", has=page.get_by_role("heading", name="NGN", exact=True))
    # Held for the pending withdrawal, and what is left to withdraw: 37,037,036.70 − 5,555,555.52
    # + 1,234,567.89 − 5,000,000.00 = 27,716,049.07 on the wallet, 750,000.00 of it held.
    expect(ngn.locator("[data-held]")).to_have_text("NGN 750,000.00")
    expect(ngn.locator("[data-available]")).to_have_text("NGN 26,966,049.07")
    expect(ngn.locator('[data-summary="closing"]')).to_have_text("NGN 27,716,049.07")

    page.get_by_role("link", name="Last month").click()
    expect(page.get_by_role("link", name="Last month")).to_have_attribute("aria-current", "true")
    expect(ngn.get_by_text("No movements in this period.")).to_be_visible()
    page.get_by_role("link", name="This month").click()
    expect(page.get_by_role("link", name="This month")).to_have_attribute("aria-current", "true")
    expect(ngn.locator("tr.movement")).to_have_count(5)
    shots(page, "host-statement")

    page.set_viewport_size(PHONE)
    assert page_width(page) <= PHONE["width"], "the statement scrolls sideways on a phone"
    card = ngn.locator("tr.movement").first
    card.scroll_into_view_if_needed()
    for cell in ("m-date", "m-desc", "m-amount", "m-balance"):
        expect(card.locator(f".{cell}")).to_be_in_viewport()
    expect(card.locator(".m-desc a")).to_be_visible()
    box = card.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]


def test_a_movements_own_page_fits_a_phone(open_as, statement_host):
    credit = statement_host.wallets.get(currency="NGN").transactions.get(type="credit")
    page = open_as(statement_host, f"/statement/{credit.reference}/", viewport=PHONE)
    expect(page.locator("#host-txn-amount")).to_have_text("NGN 1,234,567.89")
    assert page_width(page) <= PHONE["width"], "the transaction page scrolls sideways on a phone"
    shots(page, "host-transaction")


@pytest.fixture
def signed_out_page(browser, live):
    context = browser.new_context(base_url=live, viewport=PHONE)
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def test_hosts_sign_in_on_a_stayafrica_page_and_a_wrong_password_says_so(signed_out_page, host):
    page = signed_out_page
    page.goto("/admin/login/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to StayAfrica")
    expect(page).to_have_title(re.compile("StayAfrica"))
    assert "Wagtail" not in page.title() and "Wagtail" not in page.locator("main").inner_text()
    assert page_width(page) <= PHONE["width"]
    shots(page, "sign-in-branded")

    page.get_by_label("Username").fill(host.username)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".messages")).to_contain_text("didn't match")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to StayAfrica")
