from __future__ import annotations

from django.urls import URLPattern

app_name = "campaigns"

# Included under /t/<slug:tenant_slug>/campaigns/ by segmentor/urls.py; pages arrive with their issue.
urlpatterns: list[URLPattern] = []
