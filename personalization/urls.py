from __future__ import annotations

from django.urls import URLPattern, path

from personalization import views

app_name = "personalization"

SLOT = "slots/<int:slot_id>/"
VARIANT = f"{SLOT}variants/<int:slot_variant_id>/"
SITE_KEY = "site-keys/<int:site_key_id>/"

# Included under /t/<slug:tenant_slug>/personalization/ by segmentor/urls.py.
urlpatterns: list[URLPattern] = [
    path("", views.SlotListView.as_view(), name="slots"),
    path("figures.csv", views.FiguresCsvView.as_view(), name="figures_csv"),
    path("preview/", views.PreviewView.as_view(), name="preview"),
    path("slots/new/", views.SlotCreateView.as_view(), name="slot_create"),
    path(SLOT, views.SlotDetailView.as_view(), name="slot"),
    path(f"{SLOT}edit/", views.SlotEditView.as_view(), name="slot_edit"),
    path(f"{SLOT}delete/", views.SlotDeleteView.as_view(), name="slot_delete"),
    path(f"{SLOT}figures.csv", views.FiguresCsvView.as_view(), name="slot_figures_csv"),
    path(f"{SLOT}variants/new/", views.VariantCreateView.as_view(), name="variant_create"),
    path(VARIANT, views.VariantEditView.as_view(), name="variant_edit"),
    path(f"{VARIANT}move/", views.VariantMoveView.as_view(), name="variant_move"),
    path(f"{VARIANT}active/", views.VariantActiveView.as_view(), name="variant_active"),
    path(f"{VARIANT}delete/", views.VariantDeleteView.as_view(), name="variant_delete"),
    path("site-keys/", views.SiteKeysView.as_view(), name="site_keys"),
    path(SITE_KEY, views.SiteKeyDetailView.as_view(), name="site_key"),
    path(f"{SITE_KEY}revoke/", views.SiteKeyRevokeView.as_view(), name="site_key_revoke"),
    path(f"{SITE_KEY}signed-identify/", views.SiteKeySignedIdentifyView.as_view(), name="site_key_signed_identify"),
    path(f"{SITE_KEY}rotate-secret/", views.SiteKeyRotateView.as_view(), name="site_key_rotate"),
]
