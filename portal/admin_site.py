"""The site behind /django-admin/: read-only for every model, ours and the libraries'.

Wagtail's admin (/admin/) is where staff work, through the services that check permissions
and write the audit log. Django's admin stays for looking at rows (and is the anchor of
`make bench-portal`), but libraries register models there too (auth groups, API tokens,
tags, Wagtail images and documents), so the rule lives in the site: every registration gets
finance's ReadOnlyAdminMixin. settings.INSTALLED_APPS names PortalAdminConfig in place of
django.contrib.admin, Django's documented way to replace the default site.
"""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig


class ReadOnlyAdminSite(admin.AdminSite):
    @property
    def login_form(self):
        """Says so when django-axes has locked the sign-in out (portal/security.py)."""
        # Imported here: this module loads with the app registry, before forms can be.
        from portal.security import AdminLoginForm

        return AdminLoginForm

    def register(self, model_or_iterable, admin_class=None, **options):
        # Imported here: finance.admin registers its models on this very site while it loads.
        from finance.admin import ReadOnlyAdminMixin

        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, ReadOnlyAdminMixin):
            admin_class = type(f"ReadOnly{admin_class.__name__}", (ReadOnlyAdminMixin, admin_class), {})
        super().register(model_or_iterable, admin_class, **options)


class PortalAdminConfig(AdminConfig):
    default_site = "portal.admin_site.ReadOnlyAdminSite"
