"""Pages for people who are not staff (hosts): the payout statement; and the health probes."""

from django.urls import path

from .views.health import live, ready
from .views.statement import statement, statement_transaction

urlpatterns = [
    path("health/live/", live, name="health_live"),
    path("health/ready/", ready, name="health_ready"),
    path("statement/", statement, name="host_statement"),
    path("statement/<int:user_id>/", statement, name="host_statement_for"),
    path("statement/<str:reference>/", statement_transaction, name="host_transaction"),
]
