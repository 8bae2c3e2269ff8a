"""Settings, read from the environment (12-factor).

Without any environment the project runs on the embedded default: SQLite, a
file-system Celery broker and a console email backend. Production and the test
suite set ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis).
"""

from __future__ import annotations

from pathlib import Path

import django_stubs_ext
import environ
from csp.constants import NONE, SELF

# Lets Django's classes be subscripted for type checking (forms.ModelForm[Tenant]).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
SITE_URL = env.str("SITE_URL", default="http://localhost:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[SITE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_htmx",
    "csp",
    "django_countries",
    "anymail",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "tenants",
    "contacts",
    "segments",
    "campaigns",
    "journeys",
    "analytics",
    "personalization",
    "audiences",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside CommonMiddleware, so the 400 of a refused Host header is not frameable either.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "tenants.middleware.TenantMiddleware",
]

ROOT_URLCONF = "segmentor.urls"
WSGI_APPLICATION = "segmentor.wsgi.application"
ASGI_APPLICATION = "segmentor.asgi.application"

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
                "tenants.context_processors.tenant_navigation",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# PostgreSQL goes through our own backend, which sets the current tenant for
# row-level security at the start of every transaction (tenants/db/).
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
_db = DATABASES["default"]
if _db["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
    _db["ENGINE"] = "tenants.db.postgresql"
    # Persistent connections: measured at 5x the throughput of one connection per request.
    _db.setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    _db["CONN_HEALTH_CHECKS"] = True
    # One transaction per request, so the tenant is set once for all its queries.
    _db["ATOMIC_REQUESTS"] = True
elif _db["ENGINE"] == "django.db.backends.sqlite3":
    # Web server, worker and beat share the file: wait for locks, write-ahead log.
    _db.setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Maintenance only: allow a role that bypasses row-level security (the app refuses otherwise).
RLS_ALLOW_BYPASS_ROLE = env.bool("RLS_ALLOW_BYPASS_ROLE", default=False)

CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}
# The dashboard leaves computing customer-value figures to a worker when the cache is shared (a
# worker's result reaches the web processes); with the per-process memory cache it computes them.
VALUE_SUMMARY_FROM_WORKER = env.bool(
    "VALUE_SUMMARY_FROM_WORKER", default="locmem" not in CACHES["default"]["BACKEND"].lower()
)

# --- Accounts --------------------------------------------------------------
AUTH_USER_MODEL = "tenants.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_SIGNUP_FORM_CLASS = "tenants.forms.SignupForm"
ACCOUNT_EMAIL_VERIFICATION = env.str("ACCOUNT_EMAIL_VERIFICATION", default="optional")
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/5m/key"}
# Behind a reverse proxy every request comes from the proxy: count failed logins per client, taken
# from the right end of X-Forwarded-For, by as many entries as there are proxies (0: REMOTE_ADDR).
ALLAUTH_TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Segmentor] "
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Segmentor"

# --- Email -----------------------------------------------------------------
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Segmentor <no-reply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# django-anymail: ESP options (e.g. {"MAILGUN_API_KEY": …, "MAILGUN_WEBHOOK_SIGNING_KEY": …}) as JSON,
# and "user:password" for the HTTP basic auth of its webhooks at /anymail/<esp>/tracking/.
# Bounces and complaints from those webhooks are applied only when the basic auth is set.
ANYMAIL = {
    **env.json("ANYMAIL_OPTIONS", default={}),
    "WEBHOOK_SECRET": env.list("ANYMAIL_WEBHOOK_SECRET", default=[]),
}

# --- Internationalisation ---------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files ------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env.bool("STATIC_MANIFEST", default=not DEBUG)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
MEDIA_ROOT = VAR_DIR / "media"

# --- Security ----------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PREFLIGHT = env.bool("SECURE_HSTS_PREFLIGHT", default=False)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# A strict policy on every page: no inline script or style, nothing from elsewhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.api.permissions.HasApiKeyScope"],
    "DEFAULT_THROTTLE_CLASSES": ["tenants.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PAGINATION_CLASS": "tenants.api.pagination.IdCursorPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tenants.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "tenants.api.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": None,
}
API_KEY_THROTTLE_RATE = env.str("API_KEY_THROTTLE_RATE", default="6000/min")
SPECTACULAR_SETTINGS = {
    "TITLE": "Segmentor API",
    "DESCRIPTION": (
        "Segmented messaging: contacts, events, consent, segments, campaigns and journeys. "
        "Authenticate with `Authorization: Bearer <api key>`; a key belongs to one tenant. "
        'Errors share one shape: `{"error": {"code", "message", "fields"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ConsentStatusEnum": "contacts.models.ConsentStatus",
        "SuppressionReasonEnum": "contacts.models.Suppression.Reason",
        "ImportStatusEnum": "contacts.models.ImportJob.Status",
    },
    # The errors every operation can answer (401, 403, 429, 503, ...) and the one error shape on all of them.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "tenants.api.schema.document_errors"],
}

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "celery-broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "data_folder_processed": str(_broker_dir / "processed"),
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# The database scheduler, firing only while it holds a leader lock: two beats never fire twice (segmentor/beat.py).
CELERY_BEAT_SCHEDULER = "segmentor.beat:LeaderScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker waits for a broker that is away, however long (Celery's default gives up and exits after
# 100 tries), and a send in progress goes on meanwhile: it needs only the database, and its message,
# redelivered later, finds nothing left to do (pinned: Celery 6 would cancel it).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False

# --- Logging ------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# --- Segmentor ----------------------------------------------------------------
INVITATION_MAX_AGE_DAYS = 7
# Outbound HTTP (webhooks, SMS, push) and a tenant's own SMTP server refuse private addresses; these host:port pairs, as
# written in the URL (e.g. 127.0.0.1:8025), are exempt. For tests and local development only.
OUTBOUND_HTTP_ALLOWED_HOSTS = env.list("OUTBOUND_HTTP_ALLOWED_HOSTS", default=[])
# Facts about a tenant's set-up that every write's listeners ask (tenants/facts.py), cached only in a
# cache every process shares.
TENANT_FACTS_CACHE = env.bool("TENANT_FACTS_CACHE", default="locmem" not in CACHES["default"]["BACKEND"].lower())
# Website personalisation (personalization/, docs/personalization.md): decisions are cached only in a
# cache every web process shares (Redis), since a change must reach all of them; requests per site key
# and per visitor; the demo shop page at /demo/shop/ (on with DEBUG).
PERSONALIZATION_CACHE = env.bool("PERSONALIZATION_CACHE", default="locmem" not in CACHES["default"]["BACKEND"].lower())
PERSONALIZATION_DECISION_TTL = env.int("PERSONALIZATION_DECISION_TTL", default=300)
# Impressions counted in Redis and written by a worker each minute (else each decision upserts its own).
PERSONALIZATION_BUFFER_IMPRESSIONS = env.bool("PERSONALIZATION_BUFFER_IMPRESSIONS", default=PERSONALIZATION_CACHE)
PERSONALIZATION_KEY_RATE = env.str("PERSONALIZATION_KEY_RATE", default="6000/min")
PERSONALIZATION_VISITOR_RATE = env.str("PERSONALIZATION_VISITOR_RATE", default="120/min")
PERSONALIZATION_DEMO = env.bool("PERSONALIZATION_DEMO", default=DEBUG)
# Visitors (a browser's id and the contact it was known as) not seen for this long are deleted daily.
PERSONALIZATION_VISITOR_RETENTION_DAYS = env.int("PERSONALIZATION_VISITOR_RETENTION_DAYS", default=395)
