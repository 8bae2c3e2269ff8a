from __future__ import annotations

from django.urls import URLPattern

app_name = "journeys"

# Included under /t/<slug:tenant_slug>/journeys/ by segmentor/urls.py; pages arrive with their issue.
urlpatterns: list[URLPattern] = []
