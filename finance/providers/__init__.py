"""Payment providers: one module each, looked up by name or by the property's country."""

from django.conf import settings

from finance.errors import TransactionError

from .base import Provider
from .flutterwave import Flutterwave
from .mpesa import Mpesa
from .paystack import Paystack
from .sandbox import Sandbox
from .stripe import Stripe

PROVIDERS: dict[str, Provider] = {p.name: p for p in (Paystack(), Flutterwave(), Mpesa(), Stripe(), Sandbox())}


class UnknownProviderError(TransactionError):
    """No such payment provider, or it does not serve this country."""

    code = "unknown_provider"


def is_enabled(name: str) -> bool:
    """A provider is on when PAYMENT_PROVIDERS names it (the sandbox: SANDBOX_PAYMENTS_ENABLED).

    A provider that is off takes no payments and no webhooks: its secrets may be unset."""
    if name == "sandbox":
        return settings.SANDBOX_PAYMENTS_ENABLED
    return name in PROVIDERS and name in settings.PAYMENT_PROVIDERS


def enabled_provider(name: str) -> Provider | None:
    return PROVIDERS[name] if is_enabled(name) else None


def get_provider(name: str) -> Provider:
    provider = enabled_provider(name)
    if provider is None:
        raise UnknownProviderError(f"Unknown payment provider {name!r}.", field="provider")
    return provider


def providers_for_country(country: str) -> list[str]:
    """Provider names that serve `country`, in order of preference (settings.PAYMENT_PROVIDERS)."""
    names = [
        name
        for name, countries in settings.PAYMENT_PROVIDERS.items()
        if name in PROVIDERS and ("*" in countries or country.upper() in countries)
    ]
    if settings.SANDBOX_PAYMENTS_ENABLED:
        names.insert(0, "sandbox")
    return names


def choose_provider(country: str, requested: str = "") -> Provider:
    """The requested provider if it serves the country, else the first that does."""
    available = providers_for_country(country)
    if requested:
        if requested not in available:
            raise UnknownProviderError(
                f"{requested!r} does not take payments in {country}. Available: {', '.join(available) or 'none'}.",
                field="provider",
            )
        return get_provider(requested)
    if not available:
        raise UnknownProviderError(f"No payment provider serves {country}.")
    return get_provider(available[0])
