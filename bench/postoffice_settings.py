"""Django settings for the django-post-office side of bench/campaigns.py (its own database).

Only what post-office needs: its app, PostgreSQL with persistent connections (as Segmentor's
workers have), its queueing email backend, and Django's SMTP backend to the benchmark's sink.
"""

from __future__ import annotations

import os

SECRET_KEY = "bench-postoffice-secret-key"  # noqa: S105 - a local benchmark, no secret
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = ["django.contrib.contenttypes", "post_office"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("BENCH_POSTOFFICE_DB", "bench_h6_postoffice"),
        "USER": "segmentor",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "CONN_MAX_AGE": 60,
    }
}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
EMAIL_BACKEND = "post_office.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("BENCH_SINK_PORT", "2625"))
EMAIL_TIMEOUT = 30
# Its documented setup: queue with mail.send(), deliver with `send_queued_mail` through SMTP.
POST_OFFICE = {
    "BACKENDS": {"default": "django.core.mail.backends.smtp.EmailBackend"},
    "DEFAULT_PRIORITY": "medium",
}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
