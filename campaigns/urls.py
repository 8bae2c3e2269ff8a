from __future__ import annotations

from django.urls import URLPattern, path

from campaigns import views

app_name = "campaigns"

# Included under /t/<slug:tenant_slug>/campaigns/ by segmentor/urls.py.
urlpatterns: list[URLPattern] = [
    path("", views.CampaignListView.as_view(), name="list"),
    path("new/", views.CampaignCreateView.as_view(), name="create"),
    path("<int:campaign_id>/", views.CampaignDetailView.as_view(), name="detail"),
    # The composer, one page per step.
    path("<int:campaign_id>/basics/", views.BasicsView.as_view(), name="basics"),
    path("<int:campaign_id>/audience/", views.AudienceView.as_view(), name="audience"),
    path("<int:campaign_id>/audience/estimate/", views.AudienceEstimateView.as_view(), name="estimate"),
    path("<int:campaign_id>/content/", views.ContentView.as_view(), name="content"),
    path("<int:campaign_id>/variants/new/", views.VariantCreateView.as_view(), name="variant_create"),
    path("<int:campaign_id>/variants/preview/", views.PreviewView.as_view(), name="preview"),
    path("<int:campaign_id>/variants/frame/", views.EmailFrameView.as_view(), name="email_frame"),
    path("<int:campaign_id>/variants/<int:variant_id>/", views.VariantEditView.as_view(), name="variant_edit"),
    path("<int:campaign_id>/variants/<int:variant_id>/preview/", views.PreviewView.as_view(), name="variant_preview"),
    path("<int:campaign_id>/variants/<int:variant_id>/move/", views.VariantMoveView.as_view(), name="variant_move"),
    path(
        "<int:campaign_id>/variants/<int:variant_id>/delete/", views.VariantDeleteView.as_view(), name="variant_delete"
    ),
    path("<int:campaign_id>/test/", views.SendTestView.as_view(), name="send_test"),
    path("<int:campaign_id>/schedule/", views.ScheduleView.as_view(), name="schedule"),
    path("<int:campaign_id>/schedule/crontab/", views.CrontabExplainView.as_view(), name="crontab"),
    path("<int:campaign_id>/review/", views.ReviewView.as_view(), name="review"),
    path("<int:campaign_id>/send/", views.SendView.as_view(), name="send"),
    # The campaign page's actions, runs and progress.
    path("<int:campaign_id>/pause/", views.CampaignPauseView.as_view(), name="pause"),
    path("<int:campaign_id>/resume/", views.CampaignResumeView.as_view(), name="resume"),
    path("<int:campaign_id>/cancel/", views.CampaignCancelView.as_view(), name="cancel"),
    path("<int:campaign_id>/runs/<int:run_id>/", views.RunDetailView.as_view(), name="run"),
    path("<int:campaign_id>/runs/<int:run_id>/progress/", views.RunProgressView.as_view(), name="run_progress"),
]
