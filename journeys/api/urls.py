from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from journeys.api import views

router = SimpleRouter()
router.register("journeys", views.JourneyViewSet, basename="journey")

# Included under /api/v1/ by segmentor/urls.py. Step keys are strings (s1, s2…) of the journey's draft.
urlpatterns: list[URLPattern | URLResolver] = [
    path("journeys/<int:journey_id>/steps/", views.JourneyStepsView.as_view(), name="journey-steps"),
    path("journeys/<int:journey_id>/steps/<str:step_key>/", views.JourneyStepView.as_view(), name="journey-step"),
    path(
        "journeys/<int:journey_id>/steps/<str:step_key>/move/",
        views.JourneyStepMoveView.as_view(),
        name="journey-step-move",
    ),
    path("journeys/<int:journey_id>/enrollments/", views.JourneyEnrollmentsView.as_view(), name="journey-enrollments"),
    path(
        "journeys/<int:journey_id>/enrollments/<int:enrollment_id>/",
        views.JourneyEnrollmentView.as_view(),
        name="journey-enrollment",
    ),
    *router.urls,
]
