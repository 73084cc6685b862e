"""Settings for the StayAfrica Operations Portal.

Configuration comes only from environment variables; every variable has a default
that suits local development (`make run`). See the README for the full list.
"""

import ipaddress
import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from whitenoise.compress import Compressor

from portal.log_format import LOG_FORMATS, logging_settings
from portal.secrets_check import DEVELOPMENT_SECRETS, PROVIDER_SECRETS, refuse_insecure_settings

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def secret(name: str) -> str:
    """A secret from the environment. Unset, it is the published development default with
    DEBUG on, and empty with DEBUG off (then refused: the end of this file)."""
    return os.environ.get(name, DEVELOPMENT_SECRETS[name] if DEBUG else "")


def previous_secret(name: str) -> str:
    """`<name>_PREVIOUS`: the value `name` had before it was rotated. Accepted on incoming calls
    only (a webhook, the messaging service's calls) until every sender has the new value;
    outgoing calls and new signatures use the current one. Empty: none."""
    return os.environ.get(f"{name}_PREVIOUS", "").strip()


# --- Fail closed ---------------------------------------------------------------------
# DEBUG is off unless the environment turns it on: a deployment that forgets it gets the
# production profile, never debug pages and development secrets. `make run`, the tests
# and the benchmarks set DEBUG=true themselves (Makefile, testing/development_mode.py).
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = secret("SECRET_KEY")
# Keys SECRET_KEY replaced, comma separated: sessions, password-reset links and other values
# signed with them stay valid while they are listed (Django signs with SECRET_KEY only).
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", "")

# The host names this portal answers to. With DEBUG off, also the ones the load balancer
# forwards (e.g. portal.example.com); Django's test client adds its own "testserver".
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
# Origins (scheme://host) other than the portal's own host from which a browser may POST
# forms, e.g. https://admin.example.com. The portal's own https origin needs no entry.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
if not DEBUG:
    # HTTPS is terminated by the load balancer in front of the app, which says so in
    # X-Forwarded-Proto: https (and must overwrite whatever a client sent in it).
    # SECURE_PROXY_SSL_HEADER="" turns that off (TLS straight to gunicorn).
    _proxy_ssl_header = os.environ.get("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto: https")
    if _proxy_ssl_header.strip():
        _header, _, _value = _proxy_ssl_header.partition(":")
        if not _value.strip():
            raise ImproperlyConfigured(
                f"SECURE_PROXY_SSL_HEADER={_proxy_ssl_header!r}: write it as 'Header-Name: value', "
                "e.g. 'X-Forwarded-Proto: https', or set it empty when nothing terminates TLS in front."
            )
        SECURE_PROXY_SSL_HEADER = ("HTTP_" + _header.strip().upper().replace("-", "_"), _value.strip())
    # Plain HTTP is redirected to HTTPS, except what comes over the internal network straight
    # to each app server, not from browsers: the messaging service's callbacks (DJANGO_API_URL),
    # the health probes (load balancer, process manager) and GET /metrics (Prometheus).
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^api/messaging/erlang/", r"^health/live/$", r"^health/ready/$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # Browsers remember to use HTTPS only (a year by default).
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # Asking to be on browsers' preload list is hard to undo: the operator opts in.
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "portal",
    "finance",
    "messaging",
    "jobs",
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
    "knox",  # API tokens: hashed, expiring, revocable (see "Brute force and tokens" below)
    "axes",  # sign-in lockouts (see "Brute force and tokens" below)
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_tasks",
    "django_tasks_db",
    "portal.admin_site.PortalAdminConfig",  # django.contrib.admin, every model read-only
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    # Outermost, so a request's time includes every middleware below (portal/metrics.py).
    "portal.metrics.RequestMetricsMiddleware",
    # Next: every line logged while a request is served, from any layer, carries its id.
    "portal.middleware.RequestIdMiddleware",
    # Then, so everything after it (throttles, logs, the audit) sees the client's real address.
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
    # After it (it reads request.htmx): an htmx request sent to the sign-in page sends the browser there.
    "portal.htmx.HtmxLoginRedirectMiddleware",
    # After authentication: a signed-in host who reaches /admin/ goes to their statement.
    "portal.middleware.HostsToStatementMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into the 429 page.
    "axes.middleware.AxesMiddleware",
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

# Receipt e-mails (sent by a background job, retried while the server refuses). The console
# backend prints them; production sets the SMTP backend and its server below.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
# The file backend's directory (django.core.mail.backends.filebased.EmailBackend).
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH") or None
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "receipts@stayafrica.example")

WAGTAIL_SITE_NAME = "StayAfrica Operations"
# The issuer printed at the top of each host's PDF statement. STATEMENT_COMPANY_ADDRESS takes
# its lines separated by "|" (one environment variable, several printed lines).
STATEMENT_COMPANY_NAME = os.environ.get("STATEMENT_COMPANY_NAME", "StayAfrica Ltd")
STATEMENT_COMPANY_ADDRESS = os.environ.get(
    "STATEMENT_COMPANY_ADDRESS", "12 Admiralty Way|Lekki Phase 1|Lagos|Nigeria"
).split("|")
WAGTAILADMIN_BASE_URL = os.environ.get("WAGTAILADMIN_BASE_URL", "http://127.0.0.1:8000")
WAGTAILUSERS_PASSWORD_REQUIRED = True
# Nothing a page loads comes from another host: no Gravatar avatars (the admin shows its
# built-in default avatar), no release check and no "What's new" banner fetched by the
# browser. Wagtail's Help menu still links to its guide; a link is only followed on a click.
WAGTAIL_GRAVATAR_PROVIDER_URL = None
WAGTAIL_ENABLE_UPDATE_CHECK = False
WAGTAIL_ENABLE_WHATS_NEW_BANNER = False

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

# Four-eyes (finance.approvals): what staff together may move for one host in one currency
# within APPROVAL_WINDOW (refunds and withdrawal completions carried out without a second
# person), in major units. A refund or completion that would take that total above the
# threshold needs a second finance approver; reversals always do. A currency not listed
# has no threshold, so every refund and completion in it needs a second approver: a
# missing entry must never mean "no limit".
# APPROVAL_THRESHOLDS="NGN=500000,XOF=650000" in the environment overrides or adds entries.
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
for _entry in filter(None, os.environ.get("APPROVAL_THRESHOLDS", "").split(",")):
    _currency, _, _amount = _entry.partition("=")
    try:
        APPROVAL_THRESHOLDS[_currency.strip().upper()] = Decimal(_amount.strip())
    except ArithmeticError:  # decimal.InvalidOperation: refuse to start rather than guess a limit
        raise ImproperlyConfigured(f"APPROVAL_THRESHOLDS: {_entry!r} is not CURRENCY=amount.") from None
# The rolling window the thresholds apply to, in whole hours (default 24).
APPROVAL_WINDOW_HOURS = os.environ.get("APPROVAL_WINDOW_HOURS", "24").strip()
if not APPROVAL_WINDOW_HOURS.isdigit() or int(APPROVAL_WINDOW_HOURS) < 1:
    raise ImproperlyConfigured("APPROVAL_WINDOW_HOURS must be a whole number of hours, at least 1.")
APPROVAL_WINDOW_HOURS = int(APPROVAL_WINDOW_HOURS)

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
    # The API reads JSON bodies only (what the schema declares): a form or multipart body is a
    # 415, never half-parsed into something the serializers would take as empty input.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
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
    "PREPROCESSING_HOOKS": ["portal.api_schema.only_our_api"],
    # Operation ids and tags keep the full path (api_payments_...), as published before the
    # hook above left only /api/ paths (which would otherwise be taken as a prefix to strip).
    "SCHEMA_PATH_PREFIX": "",
}

# --- Brute force and tokens -----------------------------------------------------------
# Sign-in to the portal (Wagtail's /admin/login/, where hosts sign in too, and
# /django-admin/login/) and POST /api/payments/auth/token/: after LOGIN_FAILURE_LIMIT failed
# attempts for one username, or from one client address (REMOTE_ADDR as TrustedProxyMiddleware
# set it), within LOGIN_LOCKOUT_MINUTES, every attempt is refused, right password or not, until
# that window has passed: 429 with Retry-After. The sign-in pages are watched by django-axes
# (portal/security.py), the token endpoint by a DRF throttle that counts only failures
# (finance/api/throttling.py). Both keep their counters in the cache: Redis with REDIS_URL.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
LOGIN_LOCKOUT_MINUTES = env_int("LOGIN_LOCKOUT_MINUTES", 15)
# The audit log records failed sign-ins up to this many an hour across the site (portal/audit_events.py):
# a flood of guesses cannot fill it; one row says how many went unrecorded.
LOGIN_FAILURES_RECORDED_PER_HOUR = env_int("LOGIN_FAILURES_RECORDED_PER_HOUR", 500)
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out attempt before any password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_FAILURE_LIMIT = "portal.security.failure_limit"
AXES_COOLOFF_TIME = "portal.security.lockout_window"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each counted, and locked, on its own
# Attempts during a lockout do not extend it: it ends LOGIN_LOCKOUT_MINUTES after the last counted failure.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "portal.security.client_address"
AXES_WHITELIST_CALLABLE = "portal.security.counted_elsewhere"
AXES_LOCKOUT_CALLABLE = "portal.security.lockout_response"
WAGTAILADMIN_USER_LOGIN_FORM = "portal.security.LoginForm"
if not os.environ.get("REDIS_URL"):
    # axes.W001 warns that the in-process cache is not shared: true, and fine for the one
    # development server it serves (`make run`); every deployment sets REDIS_URL.
    SILENCED_SYSTEM_CHECKS = ["axes.W001"]

# API tokens (django-rest-knox): `Authorization: Bearer <token>`, stored as SHA-512 digests
# only, valid API_TOKEN_TTL_DAYS days, revoked by POST /api/payments/auth/token/revoke/ (this
# token) or .../revoke-all/ (every token of the caller). finance/api/tokens.py issues them.
API_TOKEN_TTL_DAYS = env_int("API_TOKEN_TTL_DAYS", 30)
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=API_TOKEN_TTL_DAYS),
    "AUTH_HEADER_PREFIX": "Bearer",
    "AUTO_REFRESH": False,
}

# --- Payment providers ---------------------------------------------------------------
# Webhook secrets (verification) and API keys (outbound checkout calls), per provider.
# Only the providers switched on (PAYMENT_PROVIDERS below) need theirs with DEBUG off.
# Each webhook secret's _PREVIOUS (previous_secret above) verifies deliveries still signed
# with the old value while the provider's dashboard (or our callback URL) moves to the new.
PAYSTACK_SECRET_KEY = secret("PAYSTACK_SECRET_KEY")
PAYSTACK_SECRET_KEY_PREVIOUS = previous_secret("PAYSTACK_SECRET_KEY")
FLUTTERWAVE_SECRET_KEY = secret("FLUTTERWAVE_SECRET_KEY")
FLUTTERWAVE_SECRET_HASH = secret("FLUTTERWAVE_SECRET_HASH")
FLUTTERWAVE_SECRET_HASH_PREVIOUS = previous_secret("FLUTTERWAVE_SECRET_HASH")
# Where the providers' APIs answer (checkout, payment verification, transfers). Only a
# benchmark or a test against a stand-in server changes these.
PAYSTACK_API_URL = os.environ.get("PAYSTACK_API_URL", "https://api.paystack.co").rstrip("/")
FLUTTERWAVE_API_URL = os.environ.get("FLUTTERWAVE_API_URL", "https://api.flutterwave.com/v3").rstrip("/")
STRIPE_SECRET_KEY = secret("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = secret("STRIPE_WEBHOOK_SECRET")
STRIPE_WEBHOOK_SECRET_PREVIOUS = previous_secret("STRIPE_WEBHOOK_SECRET")
MPESA_CONSUMER_KEY = secret("MPESA_CONSUMER_KEY")
MPESA_CONSUMER_SECRET = secret("MPESA_CONSUMER_SECRET")
MPESA_SHORTCODE = os.environ.get("MPESA_SHORTCODE", "174379")
MPESA_PASSKEY = secret("MPESA_PASSKEY")
MPESA_CALLBACK_TOKEN = secret("MPESA_CALLBACK_TOKEN")
MPESA_CALLBACK_TOKEN_PREVIOUS = previous_secret("MPESA_CALLBACK_TOKEN")
# M-Pesa B2C (payouts to mobile money): the initiator set up on the Daraja portal, its
# encrypted password, and the shortcode the money leaves from.
MPESA_INITIATOR_NAME = os.environ.get("MPESA_INITIATOR_NAME", "testapi")
MPESA_SECURITY_CREDENTIAL = secret("MPESA_SECURITY_CREDENTIAL")
MPESA_B2C_SHORTCODE = os.environ.get("MPESA_B2C_SHORTCODE", "600996")
# Where providers reach us (callback URLs, redirects after checkout).
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

# Which providers take payments in which country, in order of preference; "*" is anywhere.
# PAYMENT_PROVIDERS="paystack=NG GH,stripe=*" in the environment replaces the table, and
# is the switch: a provider it leaves out is off (no payments, its webhook URL answers
# 404, its secrets are not needed). PAYMENT_PROVIDERS=none switches every provider off.
PAYMENT_PROVIDERS = {
    "paystack": {"NG", "GH", "ZA", "KE"},
    "flutterwave": {"NG", "GH", "KE", "UG", "TZ", "RW", "ZA"},
    "mpesa": {"KE", "TZ"},
    "stripe": {"*"},
}
if os.environ.get("PAYMENT_PROVIDERS", "").strip():
    _table = os.environ["PAYMENT_PROVIDERS"].strip()
    PAYMENT_PROVIDERS = {}
    for _entry in [] if _table.lower() == "none" else _table.split(","):
        _name, _, _countries = (part.strip() for part in _entry.partition("="))
        if _name not in PROVIDER_SECRETS:
            raise ImproperlyConfigured(
                f"PAYMENT_PROVIDERS names {_name!r}: the providers are {', '.join(PROVIDER_SECRETS)} "
                "(the sandbox is switched on by SANDBOX_PAYMENTS_ENABLED)."
            )
        if not _countries:
            raise ImproperlyConfigured(
                f"PAYMENT_PROVIDERS gives {_name!r} no country: write e.g. '{_name}=NG GH' or '{_name}=*', "
                "or leave it out to switch it off."
            )
        PAYMENT_PROVIDERS[_name] = set(_countries.upper().split())

# The offline sandbox provider: on by default in development, first choice when on. It
# marks bookings paid without money, so with DEBUG off it is a startup error. Its webhook
# secret is its own (nothing derived from SECRET_KEY ever leaves the server).
SANDBOX_PAYMENTS_ENABLED = env_bool("SANDBOX_PAYMENTS_ENABLED", DEBUG)
SANDBOX_AUTOCOMPLETE = env_bool("SANDBOX_AUTOCOMPLETE", True)
SANDBOX_WEBHOOK_SECRET = secret("SANDBOX_WEBHOOK_SECRET")
SANDBOX_WEBHOOK_SECRET_PREVIOUS = previous_secret("SANDBOX_WEBHOOK_SECRET")
SANDBOX_WEBHOOK_URL = os.environ.get("SANDBOX_WEBHOOK_URL", f"{PUBLIC_BASE_URL}/api/payments/webhooks/sandbox/")

# --- Payouts (finance/payouts.py) ---------------------------------------------------------
# Hosts' full account numbers are encrypted with this key (finance/crypto.py); while it
# rotates, BANK_DETAILS_KEY_PREVIOUS still decrypts numbers stored under the old one.
BANK_DETAILS_KEY = secret("BANK_DETAILS_KEY")
BANK_DETAILS_KEY_PREVIOUS = previous_secret("BANK_DETAILS_KEY")
# Which provider pays which kind of account in which country. An account whose route is not
# here, whose provider is off (PAYMENT_PROVIDERS), or that has no full number is paid by the
# "manual" method: staff pay it by other means and "Complete" records that, as before.
# PAYOUT_ROUTES="paystack=bank:NG GH ZA KE,mpesa=mobile_money:KE TZ" replaces the table;
# PAYOUT_ROUTES=none makes every payout manual. With the sandbox on, it pays every account
# that has a full number, offline.
PAYOUT_ROUTES = {
    ("bank", "NG"): "paystack",
    ("bank", "GH"): "paystack",
    ("bank", "ZA"): "paystack",
    ("bank", "KE"): "paystack",
    ("bank", "UG"): "flutterwave",
    ("bank", "TZ"): "flutterwave",
    ("bank", "RW"): "flutterwave",
    ("mobile_money", "KE"): "mpesa",
    ("mobile_money", "TZ"): "mpesa",
}
if os.environ.get("PAYOUT_ROUTES", "").strip():
    _table = os.environ["PAYOUT_ROUTES"].strip()
    PAYOUT_ROUTES = {}
    for _entry in [] if _table.lower() == "none" else _table.split(","):
        _name, _, _route = (part.strip() for part in _entry.partition("="))
        _kind, _, _countries = _route.partition(":")
        if _name not in ("paystack", "flutterwave", "mpesa") or _kind not in ("bank", "mobile_money") or not _countries:
            raise ImproperlyConfigured(
                f"PAYOUT_ROUTES entry {_entry!r}: write provider=kind:COUNTRIES, e.g. 'paystack=bank:NG GH' "
                "(providers: paystack, flutterwave, mpesa; kinds: bank, mobile_money)."
            )
        for _country in _countries.upper().split():
            PAYOUT_ROUTES[(_kind, _country)] = _name
# A transfer with no outcome this long after it was sent is asked about (the periodic
# finance.payouts.query_stuck_transfers job, every PAYOUT_QUERY_EVERY_SECONDS).
PAYOUT_QUERY_AFTER_MINUTES = env_int("PAYOUT_QUERY_AFTER_MINUTES", 30)
PAYOUT_QUERY_EVERY_SECONDS = env_int("PAYOUT_QUERY_EVERY_SECONDS", 300)
# A payout processing longer than this is stuck: the PayoutStuckProcessing alert fires
# (the threshold is exported as payout_stuck_after_seconds).
PAYOUT_STUCK_AFTER_MINUTES = env_int("PAYOUT_STUCK_AFTER_MINUTES", 240)
# The sandbox refuses transfers to accounts ending in these digits, to show a failed payout offline.
SANDBOX_TRANSFER_FAILS_LAST4 = os.environ.get("SANDBOX_TRANSFER_FAILS_LAST4", "0000")
# The sandbox fails the first attempt of a refund whose amount ends in these minor units (NGN 1,234.13
# with the default), to show a failed refund and its retry offline; the retry succeeds.
SANDBOX_REFUND_FAILS_CENTS = os.environ.get("SANDBOX_REFUND_FAILS_CENTS", "13")

# Refunds at the provider (finance.refunds): a refund with no outcome this long after it was
# sent is asked about (every REFUND_QUERY_EVERY_SECONDS); one still open after
# REFUND_STUCK_AFTER_MINUTES shows red on the dashboard.
REFUND_QUERY_AFTER_MINUTES = env_int("REFUND_QUERY_AFTER_MINUTES", 30)
REFUND_QUERY_EVERY_SECONDS = env_int("REFUND_QUERY_EVERY_SECONDS", 300)
REFUND_STUCK_AFTER_MINUTES = env_int("REFUND_STUCK_AFTER_MINUTES", 240)
STRIPE_API_URL = os.environ.get("STRIPE_API_URL", "https://api.stripe.com/v1").rstrip("/")

# Negative host balances: a refund may take a host's wallet below zero (the receivable is
# recovered from their next payouts). A refund that would leave it more negative than this,
# per currency in major units, needs a second finance approver. A currency not listed has no
# allowance: any refund that would make its wallet negative needs a second approver.
# NEGATIVE_BALANCE_APPROVAL_LIMITS="NGN=100000,KES=20000" overrides or adds entries.
NEGATIVE_BALANCE_APPROVAL_LIMITS = {
    "USD": Decimal("200.00"),
    "NGN": Decimal("100000.00"),
    "KES": Decimal("20000.00"),
    "ZAR": Decimal("3000.00"),
    "GHS": Decimal("2000.00"),
    "UGX": Decimal("600000"),
    "RWF": Decimal("200000"),
    "TND": Decimal("600.000"),
}
for _entry in filter(None, os.environ.get("NEGATIVE_BALANCE_APPROVAL_LIMITS", "").split(",")):
    _currency, _, _amount = _entry.partition("=")
    try:
        NEGATIVE_BALANCE_APPROVAL_LIMITS[_currency.strip().upper()] = Decimal(_amount.strip())
    except ArithmeticError:
        raise ImproperlyConfigured(f"NEGATIVE_BALANCE_APPROVAL_LIMITS: {_entry!r} is not CURRENCY=amount.") from None

# Reconciliation (finance.reconciliation): a provider's day counts as unreconciled once it
# ended more than RECONCILIATION_GRACE_HOURS ago with ledger activity and no report read for
# it; the ProviderDayUnreconciled alert fires on that. Reports are fetched through the
# providers' APIs (where one exists and its key is set) every RECONCILIATION_FETCH_EVERY_SECONDS.
RECONCILIATION_GRACE_HOURS = env_int("RECONCILIATION_GRACE_HOURS", 36)
RECONCILIATION_FETCH_EVERY_SECONDS = env_int("RECONCILIATION_FETCH_EVERY_SECONDS", 3600)

# Requests that fail webhook verification, per source address per hour, before 429.
WEBHOOK_FAILED_VERIFICATION_LIMIT = env_int("WEBHOOK_FAILED_VERIFICATION_LIMIT", 100)

# --- Messaging ---------------------------------------------------------------------
ERLANG_MESSAGING_URL = os.environ.get("ERLANG_MESSAGING_URL", "http://127.0.0.1:8765")
# What browsers use to reach the WebSocket, when it differs from the server-side URL.
ERLANG_MESSAGING_PUBLIC_URL = os.environ.get("ERLANG_MESSAGING_PUBLIC_URL", "")
MESSAGING_SHARED_SECRET = secret("MESSAGING_SHARED_SECRET")
# While it rotates: the messaging service's calls may carry the previous value, and a node not
# restarted yet answers 401 to the new one, so erlang_client retries that call once with it.
MESSAGING_SHARED_SECRET_PREVIOUS = previous_secret("MESSAGING_SHARED_SECRET")
# How long a token for the Erlang WebSocket lives (/api/messaging/ws-token/, host pages).
# The service closes a session when its token expires; the host pages renew it before.
WS_TOKEN_TTL_SECONDS = env_int("WS_TOKEN_TTL_SECONDS", 300)
if WS_TOKEN_TTL_SECONDS < 1:
    raise ImproperlyConfigured("WS_TOKEN_TTL_SECONDS must be a whole number of seconds, at least 1.")
DJANGO_API_URL = os.environ.get("DJANGO_API_URL", "http://127.0.0.1:8000")

# --- Background jobs -----------------------------------------------------------------
# django-tasks with its database backend: jobs are rows in the same database as the money,
# taken by `manage.py run_worker` processes (jobs/worker.py). `make serve` starts
# WORKER_CONCURRENCY of them; any number may run on any number of machines.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
# A worker renews its lease (a heartbeat row) every third of this; a running job whose
# worker has not renewed it for this long is taken back and run again by another worker.
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 30)
if JOB_LEASE_SECONDS < 3:
    raise ImproperlyConfigured("JOB_LEASE_SECONDS must be at least 3.")
# How long an idle worker sleeps between looks at the queue.
JOB_POLL_SECONDS = float(os.environ.get("JOB_POLL_SECONDS", "1"))
# Finished jobs are deleted after this many days (failed ones are kept until retried).
JOB_RETENTION_DAYS = env_int("JOB_RETENTION_DAYS", 14)
# Periodic jobs and their period in seconds: each runs once per period for the whole
# deployment, whatever the number of workers (jobs/scheduler.py).
# The ledger check (finance.tasks.check_ledger: what `manage.py check_ledger` checks) runs every
# LEDGER_CHECK_EVERY_SECONDS (15 minutes); GET /metrics reports its last result.
LEDGER_CHECK_EVERY_SECONDS = env_int("LEDGER_CHECK_EVERY_SECONDS", 900)
if LEDGER_CHECK_EVERY_SECONDS < 1:
    raise ImproperlyConfigured("LEDGER_CHECK_EVERY_SECONDS must be a whole number of seconds, at least 1.")
PERIODIC_JOBS = {
    "jobs.tasks.prune_finished_jobs": 3600,
    "messaging.tasks.sample_stats": 2,
    "finance.tasks.check_ledger": LEDGER_CHECK_EVERY_SECONDS,
    "finance.payouts.query_stuck_transfers": PAYOUT_QUERY_EVERY_SECONDS,
    "finance.refunds.query_stuck_refunds": REFUND_QUERY_EVERY_SECONDS,
}

# --- Metrics -------------------------------------------------------------------------
# GET /metrics (Prometheus) answers only `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = secret("METRICS_TOKEN")
# prometheus-client's multiprocess mode: each gunicorn worker writes its counters to files in
# this directory and a scrape sums them. It must exist and start empty with each gunicorn
# start (deploy/serve, deploy/stack.py and deploy/gunicorn.conf.py make a fresh one); unset,
# counts live in the process (runserver, tests). prometheus-client reads the variable itself.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR and not os.path.isdir(PROMETHEUS_MULTIPROC_DIR):
    raise ImproperlyConfigured(
        f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r} is not a directory: create it empty before "
        "starting gunicorn, or unset it (gunicorn then makes one of its own)."
    )

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

# --- Logs ------------------------------------------------------------------------------
# One line per event on stderr: JSON with DEBUG off (the production profile: a log shipper
# reads fields, not text), plain text with DEBUG on; LOG_FORMAT=json|plain chooses. Every
# line carries the request id (X-Request-Id, portal.middleware.RequestIdMiddleware) or the
# background job's id, and the signed-in user's id; portal/log_format.py lists the fields.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "").strip().lower() or ("plain" if DEBUG else "json")
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: set it to json or plain (or leave it unset).")
LOGGING_CONFIG = "portal.log_format.configure"
LOG_LEVELS = {
    # Server errors (500s with their traceback, django.request ERROR) and warnings, also
    # with DEBUG off. Configuring "django" drops Django's default e-mail to ADMINS: errors
    # are logged, never only mailed.
    "django": os.environ.get("DJANGO_LOG_LEVEL", "WARNING"),
    # The development server's one line per request (`make run`), with its request id.
    "django.server": "INFO",
    "finance": os.environ.get("FINANCE_LOG_LEVEL", "INFO"),
    "messaging": "INFO",
    "jobs": os.environ.get("JOBS_LOG_LEVEL", "INFO"),
}
LOGGING = logging_settings(log_format=LOG_FORMAT, levels=LOG_LEVELS)

# --- Fail closed: the last word -------------------------------------------------------
# With DEBUG off, refuse to start on any missing or published secret, and on the sandbox
# provider; one error lists every problem (portal/secrets_check.py).
if not DEBUG:
    refuse_insecure_settings(globals(), enabled_providers=PAYMENT_PROVIDERS)
