"""Pages for people who are not staff (hosts): the payout statement, signing out; and the health probes."""

from django.contrib.auth.views import LogoutView
from django.urls import path

from .views.health import live, ready
from .views.statement import statement, statement_transaction

urlpatterns = [
    path("health/live/", live, name="health_live"),
    path("health/ready/", ready, name="health_ready"),
    path("statement/", statement, name="host_statement"),
    path("statement/<int:user_id>/", statement, name="host_statement_for"),
    path("statement/<str:reference>/", statement_transaction, name="host_transaction"),
    # Wagtail's sign-out (/admin/logout/) answers only people with admin access: hosts sign out here.
    path("sign-out/", LogoutView.as_view(next_page="wagtailadmin_login"), name="sign_out"),
]
