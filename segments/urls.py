from __future__ import annotations

from django.urls import URLPattern

app_name = "segments"

# Included under /t/<slug:tenant_slug>/segments/ by segmentor/urls.py; pages arrive with their issue.
urlpatterns: list[URLPattern] = []
