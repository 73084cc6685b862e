"""The portal's error pages (templates/404.html, 500.html, through portal/urls.py's handlers), the
favicon, and the settings that keep every page's requests on the portal's own host."""

import pytest
from django.contrib.staticfiles import finders
from django.template import loader
from django.test import Client, override_settings
from django.urls import include, path
from wagtail.admin.templatetags.wagtailadmin_tags import avatar_url
from wagtail.admin.views.home import UpgradeNotificationPanel, WhatsNewInWagtailVersionPanel

import portal.urls


def crash(request):
    raise RuntimeError("the ledger exploded")


# This module is the URLconf of the tests that need a view that fails: the portal's own URLs,
# its handlers, and two crashing views.
urlpatterns = [
    path("crash/", crash),
    path("api/payments/crash/", crash),
    path("", include(portal.urls.urlpatterns)),
]
handler404 = portal.urls.handler404
handler500 = portal.urls.handler500


def is_portal_page(response) -> bool:
    return response["Content-Type"].startswith("text/html") and b"StayAfrica Operations" in response.content


@pytest.fixture
def production(settings):
    settings.ROOT_URLCONF = __name__
    with override_settings(DEBUG=False):
        yield


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["/no-such-page/", "/admin/operations/no-such-page/"])
def test_a_missing_page_is_the_portals_404_page(production, finance_user, address):
    client = Client()
    client.force_login(finance_user)
    response = client.get(address)

    assert response.status_code == 404
    assert is_portal_page(response)
    assert b"Page not found" in response.content
    assert address.encode() in response.content
    assert b"Go to Wagtail admin" not in response.content
    assert b"URLconf" not in response.content  # Django's debug page


@pytest.mark.django_db
def test_a_missing_api_endpoint_is_json(production):
    response = Client().get("/api/payments/no-such-endpoint/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_a_server_error_is_the_portals_500_page_without_a_traceback(production):
    response = Client(raise_request_exception=False).get("/crash/")

    assert response.status_code == 500
    assert is_portal_page(response)
    assert b"Something went wrong on our side" in response.content
    assert b"the ledger exploded" not in response.content
    assert b"Traceback" not in response.content


@pytest.mark.django_db
def test_a_server_error_under_the_api_is_json(production):
    response = Client(raise_request_exception=False).get("/api/payments/crash/")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"


def test_the_500_page_renders_with_no_request_and_no_database():
    # No django_db mark: any query would fail the test.
    html = loader.get_template("500.html").render()

    assert "Something went wrong on our side" in html
    assert "portal/favicon.svg" in html


@pytest.mark.django_db
def test_favicon_ico_leads_to_the_stayafrica_icon():
    response = Client().get("/favicon.ico")

    assert response.status_code == 302
    assert response["Location"].endswith("portal/favicon.ico")
    assert "max-age=86400" in response["Cache-Control"]
    assert finders.find("portal/favicon.ico")
    assert Client().post("/favicon.ico").status_code == 405


@pytest.mark.django_db
def test_admin_pages_carry_the_stayafrica_icon_not_wagtails(admin_client):
    pages = {"sign-in": Client().get("/admin/login/"), "account": admin_client.get("/admin/account/")}
    for name, response in pages.items():
        html = response.content.decode()
        assert "portal/favicon.svg" in html, name
        assert "wagtailadmin/images/favicon.ico" not in html, name


@pytest.mark.django_db
def test_the_host_statement_carries_the_icon(host):
    client = Client()
    client.force_login(host)

    assert "portal/favicon.svg" in client.get("/statement/").content.decode()


@pytest.mark.django_db
def test_the_admin_asks_no_outside_host_for_avatars_or_releases(admin_user, rf):
    request = rf.get("/admin/")
    request.user = admin_user

    assert "gravatar" not in avatar_url(admin_user)  # Wagtail's own default avatar instead
    assert UpgradeNotificationPanel().render_html({"request": request}) == ""
    assert not WhatsNewInWagtailVersionPanel().is_shown({"request": request})
    assert "gravatar" not in admin_user_page(admin_user)


def admin_user_page(user) -> str:
    client = Client()
    client.force_login(user)
    return client.get("/admin/account/").content.decode()
