"""Public webhooks that bring delivery feedback in (see campaigns/views_feedback.py for auth and effects).

Included under ``/hooks/<slug:slug>/`` by segmentor/urls.py. The keyword is ``slug`` on
purpose: the tenant middleware makes any ``tenant_slug`` route a members-only page, and these
are called by providers, authenticated by the tenant's secret instead.
"""

from __future__ import annotations

from anymail.urls import urlpatterns as anymail_urlpatterns
from django.urls import URLPattern, path

from campaigns import views_feedback

urlpatterns = [
    path("feedback/", views_feedback.FeedbackHookView.as_view(), name="hooks_feedback"),
    path("sms/inbound/", views_feedback.SmsInboundView.as_view(), name="hooks_sms_inbound"),
    path("sms/status/", views_feedback.SmsStatusView.as_view(), name="hooks_sms_status"),
]

# django-anymail's webhooks (included under /anymail/ with the namespace "anymail"), each behind
# views_feedback.anymail_guarded.
anymail_patterns = [
    URLPattern(p.pattern, views_feedback.anymail_guarded(p.callback), p.default_args, p.name)
    for p in anymail_urlpatterns
    if isinstance(p, URLPattern)
]
