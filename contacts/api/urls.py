from __future__ import annotations

from django.urls import URLPattern, URLResolver

# Included under /api/v1/ by segmentor/urls.py.
urlpatterns: list[URLPattern | URLResolver] = []
