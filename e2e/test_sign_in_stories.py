"""Signing in through the real form (issue 10, §4): a host reaches the statement; after too
many failures the page says it is locked, and even the right password does not get in."""

import re

import pytest
from playwright.sync_api import expect

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pass-12345"  # conftest.make_user's password


def sign_in(page, username, password):
    page.goto("/statement/")  # sends a signed-out host to the sign-in page
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_a_host_signs_in_with_the_form_and_reads_the_statement(new_page, host):
    page = new_page()
    sign_in(page, host.username, PASSWORD)
    expect(page).to_have_url(re.compile(r"/statement/$"))


def test_after_repeated_failures_the_sign_in_page_says_it_is_locked(new_page, host, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    page = new_page()
    sign_in(page, host.username, "wrong-1")
    expect(page.locator(".messages")).to_contain_text("didn't match")
    sign_in(page, host.username, "wrong-2")
    sign_in(page, host.username, "wrong-3")
    expect(page.locator(".messages")).to_contain_text("Too many failed sign-in attempts")

    sign_in(page, host.username, PASSWORD)

    expect(page.locator(".messages")).to_contain_text("Signing in is locked for up to 15 minutes")
    assert "/admin/login/" in page.url
    shot(page, "sign-in-locked")
