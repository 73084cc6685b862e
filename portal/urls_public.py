"""Pages for people who are not staff (hosts): the payout statement."""

from django.urls import path

from .views.statement import statement

urlpatterns = [
    path("statement/", statement, name="host_statement"),
    path("statement/<int:user_id>/", statement, name="host_statement_for"),
]
