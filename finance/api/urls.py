from django.urls import path, re_path
from rest_framework.routers import DefaultRouter
from rest_framework.urlpatterns import format_suffix_patterns

from . import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("wallets", views.WalletViewSet, basename="wallet")
router.register("bank-accounts", views.BankAccountViewSet, basename="bank-account")
router.register("withdrawals", views.WithdrawalViewSet, basename="withdrawal")
router.register("transactions", views.TransactionViewSet, basename="transaction")
router.register("bookings", views.BookingViewSet, basename="booking")

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    # With `.json` twins like the router's routes, so every authenticated route answers alike.
    *format_suffix_patterns(
        [
            re_path(r"^auth/token/revoke/$", views.RevokeTokenView.as_view(), name="api-token-revoke"),
            re_path(r"^auth/token/revoke-all/$", views.RevokeAllTokensView.as_view(), name="api-token-revoke-all"),
        ]
    ),
    path("webhooks/<str:provider>/", views.WebhookView.as_view(), name="webhook"),
    *router.urls,
]
