from django.contrib import admin as django_admin
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from wagtail import urls as wagtail_urls
from wagtail.admin import urls as wagtailadmin_urls

from finance.api.errors import api_not_found, api_server_error
from portal.views.home import admin_home
from portal.views.metrics import metrics


@require_safe
@cache_control(max_age=86400)
def favicon(request):
    """Browsers ask for /favicon.ico wherever a page names no icon (the API's JSON, a PDF):
    send them to StayAfrica's icon among the static files, whose name changes with its content
    (so the redirect is temporary, and cached for a day only)."""
    return redirect(static("portal/favicon.ico"))


urlpatterns = [
    # Exactly /metrics, the path Prometheus asks by default (no slash, so no redirect).
    path("metrics", metrics, name="metrics"),
    path("favicon.ico", favicon, name="favicon"),
    # Before Wagtail's URLs: /admin/ (its home, where signing in ends) goes to the Operations pages.
    path("admin/", admin_home),
    path("admin/", include(wagtailadmin_urls)),
    # Django's own admin stays available to superusers, read-only (portal/admin_site.py); the portal lives in Wagtail's.
    path("django-admin/", django_admin.site.urls),
    path("api/payments/", include("finance.api.urls")),
    path("api/messaging/", include("messaging.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("portal.urls_public")),
    path("", include(wagtail_urls)),
]


def handler404(request, exception=None):
    """JSON for unknown API paths, the portal's page for the rest (templates/404.html)."""
    if request.path.startswith("/api/"):
        return api_not_found(request, exception)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    """JSON for the API, the portal's page for the rest (templates/500.html: plain HTML that
    needs neither the request nor the database, which may be what failed)."""
    if request.path.startswith("/api/"):
        return api_server_error(request)
    from django.views.defaults import server_error

    return server_error(request)
