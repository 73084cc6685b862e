"""With DEBUG off the portal refuses to start while a secret is missing, empty or still the
development default that anyone can read in this repository.

settings.py reads every variable (with the development defaults below, so `make run`
needs no configuration), then, with DEBUG off, calls `refuse_insecure_settings`. It
collects every problem and raises one ImproperlyConfigured that names each variable and
says how to set it, so an operator fixes them all in one go rather than one per restart.
Tests call `settings_problems` directly. Nothing here reads Django's settings: it runs
while they load.
"""

from collections.abc import Iterable, Mapping

from django.core.exceptions import ImproperlyConfigured

GENERATE = "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(50))'`"

# The values `make run`, the demo and the tests use. Published, hence never acceptable
# with DEBUG off.
DEVELOPMENT_SECRETS = {
    "SECRET_KEY": "dev-insecure-secret-key-change-me",
    "MESSAGING_SHARED_SECRET": "dev-messaging-secret",
    "METRICS_TOKEN": "dev-metrics-token",
    "PAYSTACK_SECRET_KEY": "sk_test_dev_paystack",
    "FLUTTERWAVE_SECRET_KEY": "FLWSECK_TEST-dev",
    "FLUTTERWAVE_SECRET_HASH": "dev-flutterwave-hash",
    "STRIPE_SECRET_KEY": "sk_test_dev_stripe",
    "STRIPE_WEBHOOK_SECRET": "whsec_dev_stripe",
    "MPESA_CONSUMER_KEY": "dev-mpesa-key",
    "MPESA_CONSUMER_SECRET": "dev-mpesa-secret",
    "MPESA_PASSKEY": "dev-mpesa-passkey",
    "MPESA_CALLBACK_TOKEN": "dev-mpesa-callback-token",
    "SANDBOX_WEBHOOK_SECRET": "dev-sandbox-webhook-secret",
    "BANK_DETAILS_KEY": "dev-bank-details-key",
    "MPESA_SECURITY_CREDENTIAL": "dev-mpesa-security-credential",
}

# Where each secret comes from, for the error message.
HOW_TO_SET = {
    "SECRET_KEY": f"Django's signing key: {GENERATE}",
    "MESSAGING_SHARED_SECRET": f"the same value for Django and the Erlang messaging service: {GENERATE}",
    "METRICS_TOKEN": f"the bearer token Prometheus sends to GET /metrics (its scrape job's credentials): {GENERATE}",
    "PAYSTACK_SECRET_KEY": "the secret key in Paystack's dashboard (Settings > API Keys & Webhooks)",
    "FLUTTERWAVE_SECRET_KEY": "the secret key in Flutterwave's dashboard (Settings > API Keys)",
    "FLUTTERWAVE_SECRET_HASH": "the secret hash you set in Flutterwave's dashboard (Settings > Webhooks)",
    "STRIPE_SECRET_KEY": "the secret key in Stripe's dashboard (Developers > API keys)",
    "STRIPE_WEBHOOK_SECRET": "the signing secret (whsec_...) of the webhook endpoint in Stripe's dashboard",
    "MPESA_CONSUMER_KEY": "the consumer key of your app on the Safaricom Daraja portal",
    "MPESA_CONSUMER_SECRET": "the consumer secret of your app on the Safaricom Daraja portal",
    "MPESA_PASSKEY": "the Lipa na M-Pesa passkey Safaricom issued for your shortcode",
    "MPESA_CALLBACK_TOKEN": f"a private token of ours in the M-Pesa callback URL: {GENERATE}",
    "MPESA_SECURITY_CREDENTIAL": "the B2C initiator's password encrypted with Safaricom's certificate (Daraja portal)",
    "BANK_DETAILS_KEY": f"the key hosts' account numbers are encrypted with; keep it with your backups: {GENERATE}",
}

# Every deployment needs these; each enabled payment provider adds its own.
ALWAYS_REQUIRED = ("SECRET_KEY", "MESSAGING_SHARED_SECRET", "METRICS_TOKEN", "BANK_DETAILS_KEY")
PROVIDER_SECRETS = {
    "paystack": ("PAYSTACK_SECRET_KEY",),
    "flutterwave": ("FLUTTERWAVE_SECRET_KEY", "FLUTTERWAVE_SECRET_HASH"),
    "mpesa": (
        "MPESA_CONSUMER_KEY",
        "MPESA_CONSUMER_SECRET",
        "MPESA_PASSKEY",
        "MPESA_CALLBACK_TOKEN",
        "MPESA_SECURITY_CREDENTIAL",
    ),
    "stripe": ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"),
}
# Secrets that rotate without downtime: while senders move to the new value, `<NAME>_PREVIOUS`
# holds the old one, accepted on incoming calls only (webhooks, the messaging service's calls).
ROTATED_SECRETS = (
    "MESSAGING_SHARED_SECRET",
    "PAYSTACK_SECRET_KEY",
    "FLUTTERWAVE_SECRET_HASH",
    "STRIPE_WEBHOOK_SECRET",
    "MPESA_CALLBACK_TOKEN",
    "SANDBOX_WEBHOOK_SECRET",
    "BANK_DETAILS_KEY",
)
SWITCH_OFF = (
    "A payment provider you do not use can be switched off instead: leave it out of PAYMENT_PROVIDERS "
    '(e.g. PAYMENT_PROVIDERS="paystack=NG GH,stripe=*"; PAYMENT_PROVIDERS=none switches every one off).'
)


def required_secrets(enabled_providers: Iterable[str]) -> list[str]:
    """The secrets a deployment with these payment providers switched on must set."""
    names = list(ALWAYS_REQUIRED)
    for provider in enabled_providers:
        names.extend(PROVIDER_SECRETS.get(provider, ()))
    return names


def settings_problems(values: Mapping[str, object], enabled_providers: Iterable[str]) -> list[str]:
    """One line per problem that forbids running with DEBUG off; none when all is well.

    `values` maps setting names to their values (settings.py passes its globals())."""
    enabled = list(enabled_providers)
    problems = []
    for name in required_secrets(enabled):
        value = str(values.get(name) or "").strip()
        if not value:
            state = "is not set"
        elif value == DEVELOPMENT_SECRETS[name]:
            state = "is the development default published in this repository"
        else:
            continue
        problems.append(f"{name} {state}. Set it to {HOW_TO_SET[name]}.")
    problems.extend(_previous_value_problems(values, enabled))
    if values.get("SANDBOX_PAYMENTS_ENABLED"):
        problems.append(
            "SANDBOX_PAYMENTS_ENABLED is on. The sandbox provider marks bookings paid without any money: "
            "it runs only in development (DEBUG=true). Unset it or set SANDBOX_PAYMENTS_ENABLED=false."
        )
    return problems


def _previous_value_problems(values: Mapping[str, object], enabled_providers: list[str]) -> list[str]:
    """A previous value still accepted (rotation) must be private too; empty means none."""
    published = set(DEVELOPMENT_SECRETS.values())
    problems = []
    for name in required_secrets(enabled_providers):
        if name in ROTATED_SECRETS and str(values.get(f"{name}_PREVIOUS") or "").strip() in published:
            problems.append(
                f"{name}_PREVIOUS is a development value published in this repository. Set it to the value "
                f"{name} had before you rotated it, or leave it empty once every sender uses the new one."
            )
    if any(str(key).strip() in published for key in values.get("SECRET_KEY_FALLBACKS") or ()):
        problems.append(
            "SECRET_KEY_FALLBACKS holds a development value published in this repository. List only the "
            "previous SECRET_KEY values you rotated away from (comma separated), or leave it empty."
        )
    return problems


def refuse_insecure_settings(values: Mapping[str, object], enabled_providers: Iterable[str]) -> None:
    enabled = list(enabled_providers)
    problems = settings_problems(values, enabled)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        provider_secrets = {name for provider in enabled for name in PROVIDER_SECRETS.get(provider, ())}
        switch_off = f"{SWITCH_OFF}\n" if any(p.split()[0] in provider_secrets for p in problems) else ""
        raise ImproperlyConfigured(
            "DEBUG is off (production), and the configuration is not safe to run with:\n"
            f"{listed}\n"
            f"Set these in the environment. {switch_off}"
            "For local development only, set DEBUG=true instead."
        )
