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
