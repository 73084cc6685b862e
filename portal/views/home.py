"""Where /admin/ sends people: Wagtail's own home is an empty "Search all pages" page here.

Staff land on the Operations dashboard when they may see it, else on the first Operations
page their role can open (support: Broadcasts). Anyone else with admin access (an editor
with no Operations role) keeps Wagtail's home. Signing in ends here too: Wagtail's LoginView
sends people to `wagtailadmin_home`, which is this view's address (portal/urls.py routes
/admin/ here before Wagtail's URLs). Hosts never reach it: HostsToStatementMiddleware sends
them to their statement first.
"""

from django.shortcuts import redirect
from django.urls import reverse
from wagtail.admin.auth import require_admin_access
from wagtail.admin.views.home import HomeView

from finance import permissions

from ..viewsets import OperationsGroup


def first_operations_page(user) -> str | None:
    """The URL of the first Operations section, in menu order, that `user` may open."""
    for section in OperationsGroup.items:
        required = section.permission_required
        if permissions.allows(user, *((required,) if isinstance(required, str) else required)):
            return reverse(f"{section.name}:index")
    return None


@require_admin_access
def admin_home(request):
    url = first_operations_page(request.user)
    if url is not None:
        return redirect(url)
    return HomeView.as_view()(request)
