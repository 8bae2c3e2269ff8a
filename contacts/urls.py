from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

app_name = "contacts"

# Included under /t/<slug:tenant_slug>/contacts/ by segmentor/urls.py.
urlpatterns: list[URLPattern | URLResolver] = [
    path("imports/", include("contacts.import_urls")),
]
