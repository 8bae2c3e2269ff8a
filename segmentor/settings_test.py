"""Settings for the test suite: PostgreSQL as an ordinary role, Redis, a fast hasher."""

from __future__ import annotations

import os

os.environ.setdefault("DATABASE_URL", "postgres://segmentor@127.0.0.1:5432/segmentor")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("CACHE_URL", "rediscache://127.0.0.1:6379/13")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("STATIC_MANIFEST", "0")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SESSION_COOKIE_SECURE", "0")
os.environ.setdefault("CSRF_COOKIE_SECURE", "0")
os.environ.setdefault("EMAIL_URL", "consolemail://")

from segmentor.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]
# Throttling is tested on purpose with its own rate; keep it out of the way elsewhere.
API_KEY_THROTTLE_RATE = "100000/min"
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/5m/key"}
# Serve static files straight from the source folders (no collectstatic in tests).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
# Each pytest-xdist process gets its own queue, so a worker started by one test
# process never picks up another's tasks.
CELERY_TASK_DEFAULT_QUEUE = f"segmentor-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
