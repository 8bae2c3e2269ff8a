from __future__ import annotations

from django.urls import path

from tenants import views

app_name = "tenants"

# Included under /t/<slug:tenant_slug>/ by segmentor/urls.py.
urlpatterns = [
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("settings/", views.SettingsView.as_view(), name="settings"),
    path("settings/members/", views.MembersView.as_view(), name="members"),
    path("settings/members/<int:member_id>/role/", views.MemberRoleView.as_view(), name="member_role"),
    path("settings/members/<int:member_id>/remove/", views.MemberRemoveView.as_view(), name="member_remove"),
    path(
        "settings/invitations/<int:invitation_id>/revoke/",
        views.InvitationRevokeView.as_view(),
        name="invitation_revoke",
    ),
    path("settings/api-keys/", views.ApiKeysView.as_view(), name="api_keys"),
    path("settings/api-keys/<int:api_key_id>/revoke/", views.ApiKeyRevokeView.as_view(), name="api_key_revoke"),
    path("settings/delete/", views.TenantDeleteView.as_view(), name="delete"),
]
