from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from analytics import views_public as tracking_views
from campaigns import views_public as optout_views
from campaigns.urls_hooks import anymail_patterns
from contacts import views as contact_views
from personalization import demo as personalization_demo
from segmentor import views as project_views
from tenants import views as tenant_views

# The admin signs people in through allauth's login, not its own form: the same lockout after failed
# attempts (ACCOUNT_RATE_LIMITS) and the same second factor (TOTP) as everywhere else.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]

# Every tenant-scoped page lives under /t/<tenant_slug>/; the TenantMiddleware
# checks membership for any URL with that keyword.
tenant_patterns = [
    path("", include("tenants.urls")),
    path("contacts/", include("contacts.urls")),
    path("segments/", include("segments.urls")),
    path("campaigns/", include("campaigns.urls")),
    path("journeys/", include("journeys.urls")),
    path("analytics/", include("analytics.urls")),
    path("audiences/", include("audiences.urls")),
    path("personalization/", include("personalization.urls")),
]

api_v1_patterns = [
    path("", include("tenants.api.urls")),
    path("", include("contacts.api.urls")),
    path("", include("segments.api.urls")),
    path("", include("campaigns.api.urls")),
    path("", include("journeys.api.urls")),
    path("", include("analytics.api.urls")),
    path("", include("analytics.api_value_urls")),
    path("", include("analytics.api_experiments_urls")),
    path("", include("audiences.api.urls")),
    path("", include("personalization.api.urls")),
]

urlpatterns = [
    path("", tenant_views.home, name="home"),
    path("healthz", project_views.healthz, name="healthz"),
    path("workspaces/new/", tenant_views.TenantCreateView.as_view(), name="tenant_create"),
    path("invitations/<str:token>/", tenant_views.InvitationAcceptView.as_view(), name="invitation_accept"),
    path("confirm/<str:token>/", contact_views.ConsentConfirmView.as_view(), name="consent_confirm"),
    # Opt-out pages behind the signed link in every marketing message (campaigns/optout.py).
    path("u/<str:token>/", optout_views.UnsubscribeView.as_view(), name="optout_unsubscribe"),
    path("preferences/<str:token>/", optout_views.PreferencesView.as_view(), name="optout_preferences"),
    # Open pixel and click redirect in every tracked email (analytics/tracking.py): the signed token is the key.
    path("r/o/<str:token>.gif", tracking_views.open_pixel, name="track_open"),
    path("r/c/<str:token>/", tracking_views.click, name="track_click"),
    # The website snippet's endpoints, authenticated by a public site key only (personalization/public.py),
    # and the demo shop page that uses it (on with PERSONALIZATION_DEMO).
    path("p/v1/", include("personalization.public_urls")),
    path("demo/shop/", personalization_demo.shop, name="demo_shop"),
    # Delivery feedback from providers, authenticated by the tenant's secret (campaigns/views_feedback.py).
    path("hooks/<slug:slug>/", include("campaigns.urls_hooks")),
    path("anymail/", include((anymail_patterns, "anymail"))),
    path("t/<slug:tenant_slug>/", include(tenant_patterns)),
    path("api/v1/", include((api_v1_patterns, "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "segmentor.views.not_found"
handler500 = "segmentor.views.server_error"
