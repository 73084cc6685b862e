"""Pages for people who are not staff (hosts): the payout statement; and the liveness probe."""

from django.urls import path

from .views.health import live
from .views.statement import statement

urlpatterns = [
    path("health/live/", live, name="health_live"),
    path("statement/", statement, name="host_statement"),
    path("statement/<int:user_id>/", statement, name="host_statement_for"),
]
