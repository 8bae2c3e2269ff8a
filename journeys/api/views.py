"""The journeys REST API: parse, call a service or a selector, render.

Every endpoint is tenant-scoped by the API key (tenants/api/); another tenant's journey answers
404, and so does a step key or an enrollment that is not the journey's. GETs need any key;
everything else (validate too) a key with the write scope, as everywhere in the API. A refused
field answers 400 with its path as the client wrote it (``steps[1].config.duration``); a journey
that cannot start answers 400 with ``fields.problems``: ``[{"step", "field", "message"}]``.

Steps are addressed by key (``s1``…) on the journey's draft: editing a live or paused journey
edits a draft copied from the live version, which ``start/`` publishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import set_rollback

from campaigns.api.views import parse
from campaigns.models import Variant
from campaigns.services import campaign_content_check
from journeys.api import serializers as s
from journeys.blueprints import BLUEPRINTS
from journeys.models import Enrollment, Journey, Step, StepKind
from journeys.selectors import (
    enrollment_list,
    journey_counts,
    journey_list,
    journey_version_shown,
    step_figures,
    version_steps,
)
from journeys.services import (
    JourneyInvalid,
    journey_archive,
    journey_create,
    journey_delete,
    journey_from_blueprint,
    journey_pause,
    journey_problems,
    journey_start,
    journey_update,
    step_add,
    step_delete,
    step_move,
    step_update,
)
from journeys.validation import Problem
from segments.api.parsers import BoundedJSONParser
from tenants.api.base import ERROR_RESPONSE, TenantGenericAPIView, TenantViewSet, request_actor
from tenants.api.errors import error_body
from tenants.api.pagination import IdCursorPagination

CANNOT_START = "The journey cannot start: fix the problems first."
MAX_KEY_LENGTH = 40  # Step.key

JOURNEY_ERROR_RESPONSE = OpenApiResponse(
    description="The error shape; fields are named by their path in the body.",
    examples=[
        OpenApiExample(
            "A bad wait and a template error",
            value=error_body(
                "invalid",
                "Some fields are invalid.",
                {
                    "steps[1].config.duration": [
                        'A duration: {"amount": a whole number ≥ 1, "unit": minutes, hours, days or weeks}, '
                        "a year at most."
                    ],
                    "steps[2].content.variants[0].html_body": ["Line 3: unexpected '}}'"],
                },
            ),
        )
    ],
)
PROBLEMS_RESPONSE = OpenApiResponse(
    description="Not ready to start: `fields.problems` lists each problem with the step (key) and field it is on.",
    examples=[
        OpenApiExample(
            "A send step without a message",
            value=error_body(
                "invalid",
                CANNOT_START,
                {
                    "problems": [
                        {"step": "s2", "field": "variants", "message": "Write the message: add at least one variant."}
                    ]
                },
            ),
        )
    ],
)
EMAIL = {"name": "Everyone", "target": "default", "subject": "You left something behind",
         "html_body": "<p>Hi {{ contact.first_name | default: 'there' }}, your cart is waiting.</p>",
         "cta_label": "Back to my cart", "cta_url": "https://example.com/cart"}  # fmt: skip
JOURNEY_EXAMPLE = OpenApiExample(
    "Abandoned cart, with its steps",
    request_only=True,
    value={
        "name": "Abandoned cart",
        "trigger": "event",
        "trigger_event": "cart_abandoned",
        "trigger_filters": [{"property": "value", "op": "gt", "value": 50}],
        "entry": "cooldown",
        "cooldown_days": 1,
        "goal_event": "purchase",
        "steps": [
            {
                "key": "s1",
                "kind": "wait_event",
                "name": "Wait 1 hour for a purchase",
                "config": {"event": "purchase", "timeout": {"amount": 1, "unit": "hours"}},
                "exits": {"happened": None, "timed_out": "s2"},
            },
            {
                "key": "s2",
                "kind": "send",
                "name": "Reminder",
                "config": {"channel": "email"},
                "exits": {"next": None},
                "content": {"variants": [EMAIL], "sender_name": "The Shop"},
            },
        ],
        "start_key": "s1",
    },
)


def problems_response(problems: Sequence[Problem]) -> Response:
    """400 with each problem in its place: ``fields.problems`` = ``[{"step", "field", "message"}]``."""
    set_rollback()
    body = error_body("invalid", CANNOT_START, {"problems": [problem.as_dict() for problem in problems]})
    return Response(body, status=status.HTTP_400_BAD_REQUEST)


def content_warnings(step: Step) -> dict[str, list[str]]:
    """Template warnings of a send step's saved variants (unknown variables render empty)."""
    if step.kind != StepKind.SEND or step.campaign_id is None:
        return {}
    variants = list(
        Variant.objects.filter(tenant_id=step.tenant_id, campaign_id=step.campaign_id)
        .order_by("position", "id")
        .values()
    )
    return campaign_content_check(tenant_id=step.tenant_id, variants=variants).warnings


class JourneysAPIMixin:
    """JSON bodies with a nesting cap (branch steps carry rule trees), and a journey that cannot start
    answered with its problems intact."""

    parser_classes: Sequence[type[BaseParser]] = (BoundedJSONParser,)
    tenant: Any

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, JourneyInvalid):
            return problems_response(exc.problems)
        return super().handle_exception(exc)  # type: ignore[misc]

    def journey_data(
        self, journey: Journey, serializer_class: type[serializers.Serializer], *, reread: bool = True, **extra: Any
    ) -> Any:
        """A journey with the shown version (draft, else live), its steps and their figures, and the counts.

        ``reread``: read the journey again, as a service left it (its live version may have changed).
        """
        if reread:
            journey = Journey.objects.filter(tenant_id=self.tenant.pk).select_related("live_version").get(pk=journey.pk)
        version = journey_version_shown(journey=journey)
        context = {
            "version": version,
            "steps": version_steps(version=version) if version is not None else [],
            "figures": step_figures(journey=journey, version=version) if version is not None else {},
            "counts": journey_counts(tenant=self.tenant, journey_ids=[journey.pk]),
            **extra,
        }
        return serializer_class(journey, context=context).data

    def respond(self, journey: Journey, code: int = status.HTTP_200_OK, *, reread: bool = True) -> Response:
        return Response(self.journey_data(journey, s.JourneyDetailSerializer, reread=reread), status=code)

    def step_or_404(self, journey: Journey, key: str) -> Step:
        """The step with ``key`` in the shown version; a key the journey lacks is a 404, like a missing journey."""
        if not (len(key) <= MAX_KEY_LENGTH and key.replace("_", "").isalnum()):
            raise Http404  # no step has such a key (and PostgreSQL refuses text with NUL bytes)
        version = journey_version_shown(journey=journey)
        steps = version_steps(version=version, keys=[key]) if version is not None else []
        if not steps:
            raise Http404
        return steps[0]

    def step_response(self, step: Step, warnings: dict[str, list[str]], code: int = status.HTTP_200_OK) -> Response:
        fresh = version_steps(version=step.version, keys=[step.key])[0]
        fresh.warnings = warnings  # type: ignore[attr-defined]
        return Response(s.JourneyStepSavedSerializer(fresh).data, status=code)


class JourneyCursorPagination(IdCursorPagination):
    """By name, as the builder lists them (names are unique in a workspace, so the cursor is exact)."""

    ordering = "name"


@extend_schema_view(
    retrieve=extend_schema(
        responses={200: s.JourneyDetailSerializer, 404: ERROR_RESPONSE},
        description=(
            "A journey's settings, status, live version number, enrollment counts, and the shown version (the "
            "draft being edited, else the live one) with its steps: each with its config, exits, figures "
            "(waiting, passed, converted) and, for a send step, its message (`content`: variants as in the "
            "campaigns API, and sender fields)."
        ),
    ),
)
class JourneyViewSet(JourneysAPIMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Journeys: multi-step automations a contact enters on a trigger and walks step by step."""

    model = Journey
    serializer_class = s.JourneyDetailSerializer
    lookup_url_kwarg = "journey_id"
    pagination_class = JourneyCursorPagination

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("live_version")

    def retrieve(self, request: Request, journey_id: str) -> Response:
        return self.respond(self.get_object(), reread=False)

    @extend_schema(
        parameters=[s.JourneyFilterSerializer],
        responses={200: s.JourneySerializer(many=True), 400: ERROR_RESPONSE},
        description=(
            "The workspace's journeys by name, each with its settings, status, live version number and "
            "enrollment counts (entered, active, completed, converted, exited, conversion rate). Filter by "
            "`status` or part of the name (`search`)."
        ),
    )
    def list(self, request: Request) -> Response:
        filters = parse(s.JourneyFilterSerializer, request.query_params)
        page = self.paginate_queryset(journey_list(tenant=self.tenant, **filters))
        assert page is not None  # the viewset always paginates
        counts = journey_counts(tenant=self.tenant, journey_ids=[journey.pk for journey in page])
        return self.get_paginated_response(s.JourneySerializer(page, many=True, context={"counts": counts}).data)

    def write_data(self, request: Request, *, partial: bool) -> dict[str, Any]:
        return dict(parse(s.JourneyWriteSerializer, request.data, partial=partial))

    # --- CRUD --------------------------------------------------------------------------------------
    @extend_schema(
        request=s.JourneyWriteSerializer,
        responses={201: s.JourneyDetailSerializer, 400: JOURNEY_ERROR_RESPONSE},
        examples=[JOURNEY_EXAMPLE],
        description=(
            "Create a draft journey from its settings (`name` required) and, optionally, its whole graph: "
            "`steps` (each with `key`, `kind`, `name`, `config`, `exits` and, for a send step, `content`) and "
            "`start_key`. Each step's config and each message's templates are checked here (400 with the path); "
            "the graph as a whole is checked by `validate/` and when the journey starts. Nothing runs until "
            "`start/`."
        ),
    )
    def create(self, request: Request) -> Response:
        data = self.write_data(request, partial=False)
        journey = journey_create(tenant=self.tenant, actor=request_actor(request), data=data)
        return self.respond(journey, status.HTTP_201_CREATED)

    @extend_schema(
        request=s.JourneyWriteSerializer,
        responses={200: s.JourneyDetailSerializer, 400: JOURNEY_ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "Change any settings and, with `steps`, replace the draft's whole graph (a send step keeps its "
            "message's variants when its key and kind stay and `content` is left out). A live or paused "
            "journey's steps are edited on a draft that `start/` publishes; contacts in flight keep their "
            "version. An archived journey is read-only (400)."
        ),
    )
    def partial_update(self, request: Request, journey_id: str) -> Response:
        journey = self.get_object()
        data = self.write_data(request, partial=True)
        journey = journey_update(journey=journey, actor=request_actor(request), data=data)
        return self.respond(journey)

    @extend_schema(
        responses={204: None, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Delete a journey that never started (400 otherwise: archive it, which keeps its results).",
    )
    def destroy(self, request: Request, journey_id: str) -> Response:
        journey_delete(journey=self.get_object(), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- checking and state -----------------------------------------------------------------------
    @extend_schema(
        request=None,
        responses={200: s.JourneyValidationSerializer, 404: ERROR_RESPONSE},
        description=(
            "What stops the draft (else the live version) from running: the settings, each step's config and "
            "message, and the graph (every exit leads to a step or ends, every step is reachable from the first, "
            "no path loops). Each problem names its step key and field."
        ),
    )
    @action(detail=True, methods=["post"])
    def validate(self, request: Request, journey_id: str) -> Response:
        problems = journey_problems(journey=self.get_object())
        return Response({"valid": not problems, "problems": [problem.as_dict() for problem in problems]})

    @extend_schema(
        request=s.JourneyStartSerializer,
        responses={200: s.JourneyDetailSerializer, 400: PROBLEMS_RESPONSE, 404: ERROR_RESPONSE},
        examples=[OpenApiExample("Publish and move contacts in flight", request_only=True, value={"migrate": True})],
        description=(
            "Start a draft or paused journey, publishing its draft (if any) as the version new entrants get. With "
            "`migrate`, contacts in flight move to the step with the same key in the new version (those whose "
            "step is gone stay). 400 with `fields.problems` when the journey is not valid; 400 when archived."
        ),
    )
    @action(detail=True, methods=["post"])
    def start(self, request: Request, journey_id: str) -> Response:
        journey = self.get_object()
        data = parse(s.JourneyStartSerializer, request.data)
        return self.respond(journey_start(journey=journey, actor=request_actor(request), migrate=data["migrate"]))

    @extend_schema(
        request=None,
        responses={200: s.JourneyDetailSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Stop entries and steps of a live journey; contacts in flight wait where they are until "
        "`start/` resumes it. 400 unless live.",
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, journey_id: str) -> Response:
        return self.respond(journey_pause(journey=self.get_object(), actor=request_actor(request)))

    @extend_schema(
        request=None,
        responses={200: s.JourneyArchivedSerializer, 404: ERROR_RESPONSE},
        description="End a journey for good: nobody enters any more, contacts in flight exit (`exited` counts "
        "them), results stay. An archived journey is read-only.",
    )
    @action(detail=True, methods=["post"])
    def archive(self, request: Request, journey_id: str) -> Response:
        journey = self.get_object()
        exited = journey_archive(journey=journey, actor=request_actor(request))
        return Response(self.journey_data(journey, s.JourneyArchivedSerializer, exited=exited))

    # --- blueprints ---------------------------------------------------------------------------------
    @extend_schema(
        responses={200: s.JourneyBlueprintSerializer(many=True)},
        description="The built-in journeys a workspace starts from, then edits.",
    )
    @action(detail=False, methods=["get"], pagination_class=None)
    def blueprints(self, request: Request) -> Response:
        data = [{"key": b.key, "name": b.name, "description": b.description} for b in BLUEPRINTS.values()]
        return Response(s.JourneyBlueprintSerializer(data, many=True).data)

    @extend_schema(
        request=s.JourneyFromBlueprintSerializer,
        responses={201: s.JourneyDetailSerializer, 400: ERROR_RESPONSE},
        examples=[OpenApiExample("Abandoned cart", request_only=True, value={"blueprint": "abandoned_cart"})],
        description=(
            "Create a draft journey from a blueprint, with the segments and custom attributes it needs when the "
            "workspace lacks them. The name is the blueprint's (numbered if taken) unless given."
        ),
    )
    @action(detail=False, methods=["post"], url_path="from-blueprint")
    def from_blueprint(self, request: Request) -> Response:
        data = parse(s.JourneyFromBlueprintSerializer, request.data)
        journey = journey_from_blueprint(
            tenant=self.tenant, actor=request_actor(request), blueprint=data["blueprint"], name=data.get("name")
        )
        return self.respond(journey, status.HTTP_201_CREATED)


# --- steps of the draft -----------------------------------------------------------------------------
class JourneyAPIView(JourneysAPIMixin, TenantGenericAPIView):
    """A view under /journeys/{journey_id}/: another tenant's journey is a 404."""

    model = Journey
    lookup_url_kwarg = "journey_id"


class JourneyStepsView(JourneyAPIView):
    serializer_class = s.JourneyStepSavedSerializer

    @extend_schema(
        operation_id="journeys_steps_create",
        request=s.JourneyStepAddSerializer,
        responses={201: s.JourneyStepSavedSerializer, 400: JOURNEY_ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=[
            OpenApiExample(
                "A one-day wait after step s1",
                request_only=True,
                value={"kind": "wait", "after": "s1", "config": {"duration": {"amount": 1, "unit": "days"}}},
            ),
            OpenApiExample(
                "An email at the start",
                request_only=True,
                value={"kind": "send", "config": {"channel": "email"}, "content": {"variants": [EMAIL]}},
            ),
        ],
        description=(
            "Insert a step after step `after` on its exit `exit` (at the start when `after` is null); what "
            "followed there now follows the new step on its first exit. The key is chosen for you (`s3`…)."
        ),
    )
    def post(self, request: Request, journey_id: str) -> Response:
        journey = self.get_object()
        data = parse(s.JourneyStepAddSerializer, request.data)
        step = step_add(journey=journey, actor=request_actor(request), **data)
        return self.step_response(step, content_warnings(step), status.HTTP_201_CREATED)


class JourneyStepView(JourneyAPIView):
    serializer_class = s.JourneyStepSavedSerializer

    @extend_schema(
        operation_id="journeys_steps_partial_update",
        request=s.JourneyStepUpdateSerializer,
        responses={200: s.JourneyStepSavedSerializer, 400: JOURNEY_ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=[
            OpenApiExample(
                "Wait three days instead",
                request_only=True,
                value={"config": {"duration": {"amount": 3, "unit": "days"}}},
            )
        ],
        description=(
            "Change a step's name, config or exits and, for a send step, its message (`content`; `variants` "
            "replaces the list, name a variant's `id` to keep it). Its kind stays: delete and add to change it."
        ),
    )
    def patch(self, request: Request, journey_id: str, step_key: str) -> Response:
        journey = self.get_object()
        step = self.step_or_404(journey, step_key)
        data = dict(parse(s.JourneyStepUpdateSerializer, request.data))
        content = data.pop("content", None)
        if content is not None and step.kind != StepKind.SEND:
            raise serializers.ValidationError({"content": ["Only a send step has content."]})
        step, check = step_update(
            journey=journey, actor=request_actor(request), key=step.key, data=data, content=content
        )
        return self.step_response(step, check.warnings)

    @extend_schema(
        operation_id="journeys_steps_destroy",
        parameters=[s.JourneyStepDeleteQuerySerializer],
        responses={200: s.JourneyStepsDeletedSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "Remove a step: what came before it now leads to what followed on exit `keep` (its first exit by "
            "default). Steps that only its other exits led to are removed too; `deleted` lists every key removed."
        ),
    )
    def delete(self, request: Request, journey_id: str, step_key: str) -> Response:
        journey = self.get_object()
        step = self.step_or_404(journey, step_key)
        query = parse(s.JourneyStepDeleteQuerySerializer, request.query_params)
        deleted = step_delete(journey=journey, actor=request_actor(request), key=step.key, keep=query.get("keep"))
        return Response({"deleted": deleted})


class JourneyStepMoveView(JourneyAPIView):
    serializer_class = s.JourneyStepSavedSerializer

    @extend_schema(
        operation_id="journeys_steps_move",
        request=s.JourneyStepMoveSerializer,
        responses={200: s.JourneyStepSavedSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=[OpenApiExample("After s4's yes exit", request_only=True, value={"after": "s4", "exit": "yes"})],
        description=(
            "Move a one-exit step to follow step `after` on exit `exit` (to the start when `after` is null): it "
            "leaves its place (what came before it now leads to what followed it). 400 if the move would make a "
            "path loop, or for a step with several exits (delete and re-add it instead)."
        ),
    )
    def post(self, request: Request, journey_id: str, step_key: str) -> Response:
        journey = self.get_object()
        step = self.step_or_404(journey, step_key)
        data = parse(s.JourneyStepMoveSerializer, request.data)
        step = step_move(journey=journey, actor=request_actor(request), key=step.key, **data)
        return self.step_response(step, content_warnings(step))


# --- enrollments ------------------------------------------------------------------------------------
class EnrollmentCursorPagination(IdCursorPagination):
    """Newest enrollment first: a keyset on the id."""


class JourneyEnrollmentsView(JourneyAPIView):
    serializer_class = s.JourneyEnrollmentSerializer
    pagination_class = EnrollmentCursorPagination

    @extend_schema(
        operation_id="journeys_enrollments_list",
        parameters=[s.JourneyEnrollmentFilterSerializer],
        responses={200: s.JourneyEnrollmentSerializer(many=True), 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "The journey's enrollments (one per contact and entry), newest first, in cursor pages: the contact, "
            "status, current step key, version, when it entered and finished, and why it exited. Filter by "
            "`status`."
        ),
    )
    def get(self, request: Request, journey_id: str) -> Response:
        journey = self.get_object()
        filters = parse(s.JourneyEnrollmentFilterSerializer, request.query_params)
        # Only ids of the contact are shown: the contact row (personal data) is not read.
        enrollments = enrollment_list(journey=journey, **filters).select_related(None).select_related("step", "version")
        page = self.paginate_queryset(enrollments)
        assert page is not None
        return self.get_paginated_response(s.JourneyEnrollmentSerializer(page, many=True).data)


class JourneyEnrollmentView(JourneyAPIView):
    serializer_class = s.JourneyEnrollmentDetailSerializer

    @extend_schema(
        operation_id="journeys_enrollments_retrieve",
        responses={200: s.JourneyEnrollmentDetailSerializer, 404: ERROR_RESPONSE},
        description="One enrollment with its `path`: every step taken, when it arrived and left, the exit taken "
        "and a send step's delivery.",
    )
    def get(self, request: Request, journey_id: str, enrollment_id: str) -> Response:
        journey = self.get_object()
        enrollments = Enrollment.objects.filter(tenant_id=self.tenant.pk, journey=journey).select_related(
            "step", "version"
        )
        enrollment = get_object_or_404(enrollments, pk=enrollment_id)
        return Response(s.JourneyEnrollmentDetailSerializer(enrollment).data)
