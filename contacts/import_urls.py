from __future__ import annotations

from django.urls import URLPattern

# Included under /t/<tenant_slug>/contacts/imports/ by contacts/urls.py.
urlpatterns: list[URLPattern] = []
