"""What the API shows of each object, and the shape of each request body.

Amounts go out as decimal strings with the currency's precision and come in only as
strings: a JSON number may already have lost exactness as a float on the client.
"""

from rest_framework import serializers

from finance.models import BankAccount, Payment, Wallet, WalletTransaction, Withdrawal
from finance.money import quantum


class MoneyField(serializers.CharField):
    """A decimal string in, a decimal string out; the currency's precision is checked by the service."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError('Send amounts as a decimal string, e.g. "1500.00".')
        return super().to_internal_value(data)


def money(value, currency: str) -> str:
    return str(value.quantize(quantum(currency)))


class WalletSerializer(serializers.ModelSerializer):
    balance = serializers.SerializerMethodField()
    held = serializers.SerializerMethodField()
    available = serializers.SerializerMethodField()

    class Meta:
        model = Wallet
        fields = ["id", "currency", "status", "balance", "held", "available", "updated_at"]

    def get_balance(self, wallet) -> str:
        return money(wallet.balance, wallet.currency)

    def get_held(self, wallet) -> str:
        return money(wallet.held_balance, wallet.currency)

    def get_available(self, wallet) -> str:
        return money(wallet.available_balance, wallet.currency)


class TransactionSerializer(serializers.ModelSerializer):
    amount = serializers.SerializerMethodField()
    balance_after = serializers.SerializerMethodField()
    reverses = serializers.SlugRelatedField(slug_field="reference", read_only=True, allow_null=True)
    reversed_by = serializers.SerializerMethodField()

    class Meta:
        model = WalletTransaction
        fields = [
            "reference",
            "wallet",
            "type",
            "status",
            "direction",
            "amount",
            "currency",
            "balance_after",
            "reverses",
            "reversed_by",
            "description",
            "metadata",
            "created_at",
            "updated_at",
        ]

    def get_amount(self, txn) -> str:
        return money(txn.amount, txn.currency)

    def get_balance_after(self, txn) -> str:
        return money(txn.balance_after, txn.currency)

    def get_reversed_by(self, txn) -> str | None:
        reversal = next(iter(txn.reversals.all()), None)  # at most one: a database constraint
        return reversal.reference if reversal else None


class BankAccountSerializer(serializers.ModelSerializer):
    account_number = serializers.RegexField(
        r"^\d{6,20}$",
        write_only=True,
        help_text="Digits only; only the last four are kept.",
        error_messages={"invalid": "Give the account number as 6 to 20 digits."},
    )
    masked_account_number = serializers.CharField(read_only=True)

    class Meta:
        model = BankAccount
        fields = [
            "id",
            "bank_name",
            "account_name",
            "account_number",
            "masked_account_number",
            "currency",
            "country",
            "is_primary",
            "created_at",
        ]
        read_only_fields = ["is_primary", "created_at"]


class WithdrawalSerializer(serializers.ModelSerializer):
    amount = serializers.SerializerMethodField()
    bank_account = BankAccountSerializer(read_only=True)
    transaction = serializers.SlugRelatedField(slug_field="reference", read_only=True, allow_null=True)

    class Meta:
        model = Withdrawal
        fields = [
            "id",
            "reference",
            "wallet",
            "bank_account",
            "amount",
            "currency",
            "status",
            "failure_reason",
            "transaction",
            "created_at",
            "processed_at",
        ]

    def get_amount(self, withdrawal) -> str:
        return money(withdrawal.amount, withdrawal.currency)


class WithdrawalRequestSerializer(serializers.Serializer):
    wallet = serializers.IntegerField(min_value=1)
    bank_account = serializers.IntegerField(min_value=1)
    amount = MoneyField()


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why; shown in the audit log.")


class RefundRequestSerializer(serializers.Serializer):
    amount = MoneyField()
    reason = serializers.CharField(max_length=2000)


class PayRequestSerializer(serializers.Serializer):
    provider = serializers.CharField(required=False, allow_blank=True, max_length=20)
    phone = serializers.RegexField(r"^\+?\d{9,15}$", required=False, allow_blank=True)


class PaymentSerializer(serializers.ModelSerializer):
    amount = serializers.SerializerMethodField()
    booking = serializers.IntegerField(source="booking_id", read_only=True)

    class Meta:
        model = Payment
        fields = ["reference", "provider", "amount", "currency", "status", "booking", "checkout", "created_at"]

    def get_amount(self, payment) -> str:
        return money(payment.amount, payment.currency)


class ApprovalPendingSerializer(serializers.Serializer):
    status = serializers.CharField(default="pending_approval")
    approval_request = serializers.IntegerField()
    message = serializers.CharField()
    approval_reason = serializers.CharField(help_text="Why a second approver is needed.")


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
