"""Wagtail's root page and default Site, which its admin needs to render.

Migrations create them, but a transactional test (and pytest-django's live_server) flushes
every table afterwards, so tests that serve the admin recreate them when missing.
"""


def ensure_wagtail_site() -> None:
    from django.contrib.contenttypes.models import ContentType
    from wagtail.models import Locale, Page, Site

    ContentType.objects.clear_cache()  # a flush gives content types new ids
    if not Site.objects.exists():
        Locale.objects.get_or_create(language_code="en")
        root = Page.get_first_root_node() or Page.add_root(instance=Page(title="Root", slug="root"))
        home = root.add_child(instance=Page(title="StayAfrica", slug="home"))
        Site.objects.create(hostname="localhost", root_page=home, is_default_site=True)
