"""Settings for the StayAfrica Operations Portal.

Configuration comes only from environment variables; every variable has a default
that suits local development (`make run`). See the README for the full list.
"""

import ipaddress
import os
from decimal import Decimal
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from whitenoise.compress import Compressor

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


DEFAULT_SECRET_KEY = "dev-insecure-secret-key-change-me"
SECRET_KEY = os.environ.get("SECRET_KEY", DEFAULT_SECRET_KEY)
DEBUG = env_bool("DEBUG", True)
if not DEBUG and SECRET_KEY == DEFAULT_SECRET_KEY:
    # Refuse to run a production-like instance with a key everybody can read on GitHub.
    raise ImproperlyConfigured("DEBUG is off: set SECRET_KEY to a private random value.")

ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]

INSTALLED_APPS = [
    "portal",
    "finance",
    "messaging",
    "wagtail.contrib.forms",
    "wagtail.contrib.settings",
    "wagtail.users",
    "wagtail.snippets",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.search",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    "django_htmx",
    "django_tables2",
    "django_filters",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "portal.admin_site.PortalAdminConfig",  # django.contrib.admin, every model read-only
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    # First, so everything after it (throttles, logs, the audit) sees the client's real address.
    "portal.middleware.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from gunicorn, before sessions and the rest are touched.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite is the embedded default for `make run`; tests and benchmarks use PostgreSQL.
# DATABASE_POOLER=pgbouncer says DATABASE_URL points at PgBouncer in transaction pooling
# mode. PgBouncer then keeps the server connections, so Django closes its connection after
# each request (CONN_MAX_AGE=0), and server-side cursors are off: a named cursor lives in
# one server session, and the next transaction may get another one (Django's docs on
# transaction pooling). The ledger needs nothing else: it prepares no statements.
# Without a pooler, Django keeps each connection DB_CONN_MAX_AGE seconds (default 60).
DATABASE_POOLER = os.environ.get("DATABASE_POOLER", "").strip().lower()
if DATABASE_POOLER not in {"", "pgbouncer"}:
    raise ImproperlyConfigured(f"DATABASE_POOLER={DATABASE_POOLER!r}: leave it unset, or set it to 'pgbouncer'.")
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=0 if DATABASE_POOLER else env_int("DB_CONN_MAX_AGE", 60),
    )
}
if DATABASE_POOLER == "pgbouncer":
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Writers queue on SQLite's lock instead of failing at once under the dev server's threads.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20

AUTH_USER_MODEL = "portal.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# Where `collectstatic` gathers every static file for WhiteNoise to serve (`make serve`).
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # Front-end libraries installed from the npm registry by `make` (package.json).
    ("vendor/chart.js", BASE_DIR / "node_modules" / "chart.js" / "dist"),
]
# With DEBUG off, static files are served by WhiteNoise from STATIC_ROOT only, under names
# that carry a hash of their content (cached for ever by browsers) and pre-compressed
# (Brotli and gzip); nothing is read from node_modules or the source tree at run time.
# In development Django's finders serve them as they are edited.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Only the hashed copies are kept, and source maps and type declarations (read by
# developer tools, never by a page) are not compressed: collectstatic then takes seconds,
# not a minute.
WHITENOISE_KEEP_ONLY_HASHED_FILES = True
# Fixed when the settings load (the test runner turns DEBUG off later): in development
# WhiteNoise finds files where they are edited and needs no collected copy.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = [*Compressor.SKIP_COMPRESS_EXTENSIONS, "map", "ts"]
MEDIA_ROOT = BASE_DIR / "media"
MEDIA_URL = "/media/"

LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/statement/"

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "receipts@stayafrica.example")

WAGTAIL_SITE_NAME = "StayAfrica Operations"
WAGTAILADMIN_BASE_URL = os.environ.get("WAGTAILADMIN_BASE_URL", "http://127.0.0.1:8000")
WAGTAILUSERS_PASSWORD_REQUIRED = True

# --- Money -------------------------------------------------------------------------
DEFAULT_CURRENCY = os.environ.get("DEFAULT_CURRENCY", "USD")
# Smallest withdrawal per currency, in major units. Currencies not listed have none.
# MINIMUM_WITHDRAWAL="NGN=2000,KES=750" in the environment overrides or adds entries.
MINIMUM_WITHDRAWAL = {
    "USD": Decimal("10.00"),
    "NGN": Decimal("1000.00"),
    "KES": Decimal("500.00"),
    "ZAR": Decimal("100.00"),
    "GHS": Decimal("50.00"),
    "UGX": Decimal("20000"),
    "RWF": Decimal("5000"),
    "TND": Decimal("20.000"),
}
for _entry in filter(None, os.environ.get("MINIMUM_WITHDRAWAL", "").split(",")):
    _currency, _, _amount = _entry.partition("=")
    MINIMUM_WITHDRAWAL[_currency.strip().upper()] = Decimal(_amount.strip())

# Four-eyes: a withdrawal completion or a refund above this amount (major units) needs a
# second finance approver. Reversals always do. Currencies not listed never need one.
APPROVAL_THRESHOLDS = {
    "USD": Decimal("1000.00"),
    "NGN": Decimal("500000.00"),
    "KES": Decimal("100000.00"),
    "ZAR": Decimal("15000.00"),
    "GHS": Decimal("10000.00"),
    "UGX": Decimal("3000000"),
    "RWF": Decimal("1000000"),
    "TND": Decimal("3000.000"),
}

# --- REST API ----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "finance.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "finance.api.pagination.PageNumberOnly",
    "PAGE_SIZE": 25,
    "EXCEPTION_HANDLER": "finance.api.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "StayAfrica Operations API",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies get their own components, so a required string is declared non-blank
    # (minLength 1) where it is sent, and write-only fields are not shown in answers.
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Payment providers ---------------------------------------------------------------
# Webhook secrets (verification) and API keys (outbound checkout calls), per provider.
PAYSTACK_SECRET_KEY = os.environ.get("PAYSTACK_SECRET_KEY", "sk_test_dev_paystack")
FLUTTERWAVE_SECRET_KEY = os.environ.get("FLUTTERWAVE_SECRET_KEY", "FLWSECK_TEST-dev")
FLUTTERWAVE_SECRET_HASH = os.environ.get("FLUTTERWAVE_SECRET_HASH", "dev-flutterwave-hash")
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "sk_test_dev_stripe")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_dev_stripe")
MPESA_CONSUMER_KEY = os.environ.get("MPESA_CONSUMER_KEY", "dev-mpesa-key")
MPESA_CONSUMER_SECRET = os.environ.get("MPESA_CONSUMER_SECRET", "dev-mpesa-secret")
MPESA_SHORTCODE = os.environ.get("MPESA_SHORTCODE", "174379")
MPESA_PASSKEY = os.environ.get("MPESA_PASSKEY", "dev-mpesa-passkey")
MPESA_CALLBACK_TOKEN = os.environ.get("MPESA_CALLBACK_TOKEN", "dev-mpesa-callback-token")
# Where providers reach us (callback URLs, redirects after checkout).
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

# Which providers take payments in which country, in order of preference; "*" is anywhere.
# PAYMENT_PROVIDERS="paystack=NG GH,stripe=*" in the environment replaces the table.
PAYMENT_PROVIDERS = {
    "paystack": {"NG", "GH", "ZA", "KE"},
    "flutterwave": {"NG", "GH", "KE", "UG", "TZ", "RW", "ZA"},
    "mpesa": {"KE", "TZ"},
    "stripe": {"*"},
}
if os.environ.get("PAYMENT_PROVIDERS"):
    PAYMENT_PROVIDERS = {
        name.strip(): set(countries.upper().split())
        for name, _, countries in (entry.partition("=") for entry in os.environ["PAYMENT_PROVIDERS"].split(","))
    }

# The offline sandbox provider: on by default in development, first choice when on.
SANDBOX_PAYMENTS_ENABLED = env_bool("SANDBOX_PAYMENTS_ENABLED", DEBUG)
SANDBOX_AUTOCOMPLETE = env_bool("SANDBOX_AUTOCOMPLETE", True)
SANDBOX_WEBHOOK_SECRET = os.environ.get("SANDBOX_WEBHOOK_SECRET", "sandbox-" + SECRET_KEY[:24])
SANDBOX_WEBHOOK_URL = os.environ.get("SANDBOX_WEBHOOK_URL", f"{PUBLIC_BASE_URL}/api/payments/webhooks/sandbox/")

# Requests that fail webhook verification, per source address per hour, before 429.
WEBHOOK_FAILED_VERIFICATION_LIMIT = env_int("WEBHOOK_FAILED_VERIFICATION_LIMIT", 100)

# --- Messaging ---------------------------------------------------------------------
ERLANG_MESSAGING_URL = os.environ.get("ERLANG_MESSAGING_URL", "http://127.0.0.1:8765")
# What browsers use to reach the WebSocket, when it differs from the server-side URL.
ERLANG_MESSAGING_PUBLIC_URL = os.environ.get("ERLANG_MESSAGING_PUBLIC_URL", "")
MESSAGING_SHARED_SECRET = os.environ.get("MESSAGING_SHARED_SECRET", "dev-messaging-secret")
DJANGO_API_URL = os.environ.get("DJANGO_API_URL", "http://127.0.0.1:8000")

# --- Shared state --------------------------------------------------------------------
# Anything counted or remembered across requests (the webhook verification limit, the
# stats chart's ring of samples) lives in the cache, so it must be shared by every
# process on every machine: Redis whenever REDIS_URL is set (`make serve` sets it). The
# in-process cache is only for a single development server (`make run`).
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Several deployments (or test runs) can share one Redis without mixing keys.
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "stayafrica"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The addresses (or networks, e.g. 10.0.0.0/8) of the reverse proxies in front of the app,
# such as nginx. Only a request arriving from one of them may name the client's address in
# X-Forwarded-For; from anywhere else the header is ignored (portal/middleware.py).
TRUSTED_PROXIES = [p.strip() for p in os.environ.get("TRUSTED_PROXIES", "").split(",") if p.strip()]
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError as _error:
        raise ImproperlyConfigured(f"TRUSTED_PROXIES: {_error}. List addresses or networks, e.g. 127.0.0.1,10.0.0.0/8.")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        # Server errors (500s with their traceback) and warnings, also with DEBUG off.
        "django": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "WARNING")},
        "finance": {"handlers": ["console"], "level": os.environ.get("FINANCE_LOG_LEVEL", "INFO")},
        "messaging": {"handlers": ["console"], "level": "INFO"},
    },
}
