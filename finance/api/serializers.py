"""What the API shows of each object, and the shape of each request body.

Amounts go out as decimal strings with the currency's precision and come in only as
strings: a JSON number may already have lost exactness as a float on the client.
"""

import copy
import functools

import iso3166
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from finance.errors import InvalidAmountError
from finance.models import BankAccount, Payment, Wallet, WalletTransaction, Withdrawal
from finance.money import COLUMN_DECIMALS, COLUMN_DIGITS, quantum, supported_currencies
from finance.providers import PROVIDERS

# At least one character that is neither a space nor NUL (which DRF refuses): what "not blank"
# means once DRF has trimmed the value, declared in the schema as well as checked.
NON_BLANK = RegexValidator(r"^[^\x00]*[^\x00\s][^\x00]*$", "This field may not be blank.", code="blank")


class StringOnly:
    """JSON strings only. DRF's CharField would take 12 or true as "12" or "True", which the
    schema (type: string) calls invalid: what the schema refuses, the API refuses."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StringRegexField(StringOnly, serializers.RegexField):
    pass


class TextField(StringOnly, serializers.CharField):
    """A required, non-blank string: minLength 1 and a pattern in the schema, refused when blank."""

    def __init__(self, **kwargs):
        # Not trimmed: what the schema declares (length, pattern) is what is checked.
        super().__init__(allow_blank=False, min_length=1, trim_whitespace=False, **kwargs)
        self.validators.append(NON_BLANK)


class CodeChoiceField(serializers.ChoiceField):
    """One of a fixed list of codes (countries, currencies), as DRF's ChoiceField.

    DRF copies every declared field each time it builds a serializer: it makes the field again
    from deep copies of its arguments, then works out its lookup tables from the choices. For
    the 249 countries that was most of the time showing a bank account took (every withdrawal
    shows one). The codes never change: the copies share them, and the tables made from them."""

    def __init__(self, choices, **kwargs):
        super().__init__(tuple(choices), **kwargs)

    def __deepcopy__(self, memo):
        # DRF's Field.__deepcopy__, but the choices (immutable) and validators (as DRF) are shared.
        kwargs = {
            key: value if key in ("choices", "validators") else copy.deepcopy(value, memo)
            for key, value in self._kwargs.items()
        }
        return self.__class__(*self._args, **kwargs)

    def _set_choices(self, choices):
        self.grouped_choices, self._choices, self.choice_strings_to_values = _choice_tables(tuple(choices))

    choices = property(serializers.ChoiceField._get_choices, _set_choices)


@functools.cache
def _choice_tables(choices: tuple) -> tuple[dict, dict, dict]:
    """What ChoiceField works out from its choices, once per list of choices."""
    field = serializers.ChoiceField(choices)
    return field.grouped_choices, field.choices, field.choice_strings_to_values


class MoneyField(serializers.CharField):
    """A decimal string in, a decimal string out.

    The schema declares the shape finance.money.parse_amount accepts and the column holds; the
    currency's own precision (0, 2 or 3 decimals) and the amount being above zero are checked
    by the service against the wallet or booking."""

    def __init__(self, **kwargs):
        whole, decimals = COLUMN_DIGITS - COLUMN_DECIMALS, COLUMN_DECIMALS
        kwargs.setdefault("help_text", 'A positive decimal string in the currency\'s precision, e.g. "1500.00".')
        super().__init__(
            allow_blank=False, min_length=1, max_length=whole + decimals + 1, trim_whitespace=False, **kwargs
        )
        self.shape = RegexValidator(
            rf"^[0-9]{{1,{whole}}}(\.[0-9]{{1,{decimals}}})?$", "Give the amount as e.g. 1500.00."
        )
        self.validators.append(self.shape)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError('Send amounts as a decimal string, e.g. "1500.00".')
        if not self.shape.regex.fullmatch(data):
            # The same refusal, with the same code, as the service gives any amount it cannot take.
            raise InvalidAmountError(
                f'Give the amount as a decimal string, e.g. "1500.00"; {data[:40]!r} is not one.', field=self.field_name
            )
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
    """A payout account. The full number goes in once (`account_number`, write-only) and is
    stored encrypted (finance.crypto); what comes back is its last four digits only."""

    account_type = serializers.ChoiceField(
        choices=BankAccount.AccountType.choices,
        required=False,
        help_text="bank (the default) or mobile_money (an M-Pesa wallet in KE or TZ).",
    )
    account_number = StringRegexField(
        r"^\+?[0-9][0-9 ]{5,29}$",
        max_length=30,
        write_only=True,
        help_text=(
            "The full number, digits (spaces are ignored); never shown again. A bank account: 6 to 20 digits, "
            "10 (the NUBAN) in NG. Mobile money: the M-Pesa phone number, e.g. 254712345678 or 0712345678."
        ),
        error_messages={"invalid": "Give the account number as digits (6 to 20 for a bank account)."},
    )
    bank_code = StringRegexField(
        r"^[A-Za-z0-9]+$",
        max_length=20,
        required=False,
        allow_blank=True,
        help_text=(
            "The provider's code for the bank (Paystack's or Flutterwave's bank list, e.g. 058 for GTBank in NG); "
            "required for a bank account in a country payouts reach by transfer. Empty for mobile money."
        ),
    )
    bank_name = TextField(max_length=100)
    account_name = TextField(max_length=100)
    country = CodeChoiceField(
        choices=sorted(iso3166.countries_by_alpha2),
        required=False,
        allow_blank=True,
        help_text="ISO 3166-1 alpha-2 code, e.g. NG; blank if unknown.",
    )
    currency = CodeChoiceField(
        choices=supported_currencies(),
        required=False,
        allow_blank=True,
        help_text="A currency the ledger holds; blank: payouts in any currency.",
    )
    masked_account_number = serializers.CharField(read_only=True)

    class Meta:
        model = BankAccount
        # Never account_number_encrypted, recipient_code or recipient_provider.
        fields = [
            "id",
            "account_type",
            "bank_name",
            "bank_code",
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
            "payout_method",
            "transfer_reference",
            "provider_transfer_id",
            "payout_sent_at",
        ]
        # How the money left (finance.payouts): "" until sent, "manual", or the provider's name
        # while its transfer is processing and after; written only by the payout engine.
        read_only_fields = ["payout_method", "transfer_reference", "provider_transfer_id", "payout_sent_at"]

    def get_amount(self, withdrawal) -> str:
        return money(withdrawal.amount, withdrawal.currency)


class WithdrawalRequestSerializer(serializers.Serializer):
    wallet = serializers.IntegerField(min_value=1)
    bank_account = serializers.IntegerField(min_value=1)
    amount = MoneyField()


class ReasonSerializer(serializers.Serializer):
    reason = TextField(max_length=2000, help_text="Why; shown in the audit log.")


class RefundRequestSerializer(serializers.Serializer):
    amount = MoneyField()
    reason = TextField(max_length=2000)


@extend_schema_field({"type": "string", "enum": ["", *sorted(PROVIDERS)]})
class ProviderNameField(StringOnly, serializers.CharField):
    """A payment provider's name. The schema lists the names the code knows; any other name,
    and one switched off or not serving the property's country, is refused by the payment
    service as 400 unknown_provider (the code clients already handle)."""


class PayRequestSerializer(serializers.Serializer):
    provider = ProviderNameField(required=False, allow_blank=True, max_length=20)
    phone = StringRegexField(r"^\+?\d{9,15}$", required=False, allow_blank=True)


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
