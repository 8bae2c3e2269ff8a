from __future__ import annotations

from django.urls import URLPattern, path

from journeys import views

app_name = "journeys"

# Included under /t/<slug:tenant_slug>/journeys/ by segmentor/urls.py.
urlpatterns: list[URLPattern] = [
    path("", views.JourneyListView.as_view(), name="list"),
    path("new/", views.JourneyCreateView.as_view(), name="create"),
    path("new/blueprint/", views.BlueprintCreateView.as_view(), name="create_from_blueprint"),
    # The journey page is the builder; its settings, its life and its steps.
    path("<int:journey_id>/", views.JourneyDetailView.as_view(), name="detail"),
    path("<int:journey_id>/edit/", views.SettingsView.as_view(), name="settings"),
    path("<int:journey_id>/start/", views.JourneyStartView.as_view(), name="start"),
    path("<int:journey_id>/pause/", views.JourneyPauseView.as_view(), name="pause"),
    path("<int:journey_id>/archive/", views.JourneyArchiveView.as_view(), name="archive"),
    path("<int:journey_id>/delete/", views.JourneyDeleteView.as_view(), name="delete"),
    path("<int:journey_id>/steps/new/", views.StepCreateView.as_view(), name="step_create"),
    path("<int:journey_id>/steps/<str:step_key>/", views.StepEditView.as_view(), name="step_edit"),
    path("<int:journey_id>/steps/<str:step_key>/move/", views.StepMoveView.as_view(), name="step_move"),
    path("<int:journey_id>/steps/<str:step_key>/delete/", views.StepDeleteView.as_view(), name="step_delete"),
    # Who is in it, and each contact's path.
    path("<int:journey_id>/enrollments/", views.EnrollmentListView.as_view(), name="enrollments"),
    path("<int:journey_id>/enrollments/<int:enrollment_id>/", views.EnrollmentDetailView.as_view(), name="enrollment"),
]
