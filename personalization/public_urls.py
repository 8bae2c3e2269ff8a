"""The snippet's endpoints, mounted at ``/p/v1/`` (personalization/public.py)."""

from __future__ import annotations

from django.urls import path

from personalization import public

app_name = "personalization_public"

urlpatterns = [
    path("events/", public.events, name="events"),
    path("identify/", public.identify, name="identify"),
    path("decide/", public.decide, name="decide"),
    path("click/", public.click, name="click"),
]
