"""Private secrets for anything run with DEBUG off outside a deployment: the production
profile in the tests, the benchmarks. With DEBUG off the settings refuse a secret left unset
or at its development default (portal/secrets_check.py), so these are new random values for
each process, as a deployment would have its own. No Django import: it is read before the
settings load."""

import secrets


def _private_value() -> str:
    return secrets.token_urlsafe(50)


# With DEBUG off the settings refuse any secret left unset or at its development default
# (portal/secrets_check.py): a full set, every provider on.
# new for each process. The sandbox provider stays off (it is refused with DEBUG off).
PRODUCTION_SECRETS = {
    "SECRET_KEY": _private_value(),
    "MESSAGING_SHARED_SECRET": _private_value(),
    "METRICS_TOKEN": _private_value(),
    "PAYSTACK_SECRET_KEY": "sk_live_" + _private_value(),
    "FLUTTERWAVE_SECRET_KEY": "FLWSECK-" + _private_value(),
    "FLUTTERWAVE_SECRET_HASH": _private_value(),
    "STRIPE_SECRET_KEY": "sk_live_" + _private_value(),
    "STRIPE_WEBHOOK_SECRET": "whsec_" + _private_value(),
    "MPESA_CONSUMER_KEY": _private_value(),
    "MPESA_CONSUMER_SECRET": _private_value(),
    "MPESA_PASSKEY": _private_value(),
    "MPESA_CALLBACK_TOKEN": _private_value(),
    "MPESA_SECURITY_CREDENTIAL": _private_value(),
    "BANK_DETAILS_KEY": _private_value(),
}
