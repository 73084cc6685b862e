from django.urls import path
from rest_framework.routers import DefaultRouter

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
    path("webhooks/<str:provider>/", views.WebhookView.as_view(), name="webhook"),
    *router.urls,
]
