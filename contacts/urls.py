from __future__ import annotations

from django.urls import URLPattern

app_name = "contacts"

# Included under /t/<slug:tenant_slug>/contacts/ by segmentor/urls.py; pages arrive with their issue.
urlpatterns: list[URLPattern] = []
