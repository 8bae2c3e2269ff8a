"""The segments REST API: parse, call the rule validator, a service or a selector, render.

Every endpoint is tenant-scoped by the API key (tenants/api/); another tenant's segment
answers 404. GETs need any key; everything else (validate and preview too) a key with the
write scope, as everywhere in the API. A refused rule tree answers 400 with
``fields.rules`` = the validator's list of ``{"path", "message"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import set_rollback

from contacts.models import Contact
from segments.api import serializers as s
from segments.api.export import segment_members_csv
from segments.api.parsers import BoundedJSONParser
from segments.api.schema import rule_examples
from segments.models import Segment, SegmentMember
from segments.rules import Registry, RuleError
from segments.rules import validate as validate_rules
from segments.selectors import MEMBER_COLUMNS, OVERLAP_MAX_SEGMENTS, overlap_warnings, segment_preview
from segments.selectors import overlap as shared_members
from segments.services import (
    SegmentInvalid,
    segment_create,
    segment_delete,
    segment_update,
    static_members_add,
    static_members_remove,
)
from tenants.api.base import ERROR_RESPONSE, TenantGenericAPIView, TenantViewSet, parse, request_actor
from tenants.api.errors import error_body
from tenants.api.pagination import IdCursorPagination

RULES_ERROR_RESPONSE = OpenApiResponse(
    description='The error shape; a refused tree puts the validator\'s `[{"path", "message"}]` in `fields.rules`.',
    examples=[
        OpenApiExample(
            "A refused tree",
            value=error_body(
                "invalid",
                "Some fields are invalid.",
                {"rules": [{"path": "all.0.value.1", "message": "'Germany' is not an ISO 3166 country code."}]},
            ),
        )
    ],
)
NOT_A_TREE = 'Expected a rule tree: {"all": [...]}.'
STATIC_HAS_NO_RULES = "A static segment has no rules: add or remove its members instead."


def refuse_rules(message: str) -> SegmentInvalid:
    return SegmentInvalid({}, [RuleError("", message)])


class MemberCursorPagination(IdCursorPagination):
    """Members newest contact first: a keyset on the contact id (unique within a segment)."""

    ordering = "-contact_id"


class SegmentsAPIMixin:
    """JSON bodies with a nesting cap, and refused segments answered with their rule paths intact."""

    parser_classes: Sequence[type[BaseParser]] = (BoundedJSONParser,)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, SegmentInvalid):
            # The shared handler flattens every value to a list of strings; rule errors keep their shape.
            fields: dict[str, Any] = {key: list(value) for key, value in exc.message_dict.items() if key != "rules"}
            if exc.rule_errors:
                fields["rules"] = [error.as_dict() for error in exc.rule_errors]
            set_rollback()
            return Response(error_body("invalid", "Some fields are invalid.", fields), status=400)
        return super().handle_exception(exc)  # type: ignore[misc]


@extend_schema_view(
    list=extend_schema(description="Every segment of the workspace with its size, version and last refresh."),
    retrieve=extend_schema(responses={200: s.SegmentSerializer, 404: ERROR_RESPONSE}),
)
class SegmentViewSet(SegmentsAPIMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Segments: rule-based (dynamic) or hand-picked (static) groups of contacts."""

    model = Segment
    serializer_class = s.SegmentSerializer
    lookup_url_kwarg = "segment_id"

    # --- CRUD ------------------------------------------------------------------------------------
    @extend_schema(
        request=s.SegmentCreateSerializer,
        responses={201: s.SegmentSerializer, 400: RULES_ERROR_RESPONSE},
        examples=rule_examples(named=True),
        description=(
            "Create a segment. A dynamic segment's rules are validated (400 with the path of each bad node) and "
            "its members are computed by a refresh queued at once; a static segment starts empty."
        ),
    )
    def create(self, request: Request) -> Response:
        data = parse(s.SegmentCreateSerializer, request.data)
        if data["kind"] == Segment.Kind.STATIC and data.get("rules") not in (None, {}):
            raise refuse_rules(STATIC_HAS_NO_RULES)
        segment = segment_create(
            tenant=self.tenant, actor=request_actor(request), name=data["name"], kind=data["kind"],
            rules=data.get("rules"), description=data["description"],
        )  # fmt: skip
        return Response(s.SegmentSerializer(segment).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=s.SegmentUpdateSerializer,
        responses={200: s.SegmentSerializer, 400: RULES_ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=rule_examples(),
        description="Rename, describe, or change the rules (which bumps the version and queues a refresh).",
    )
    def partial_update(self, request: Request, segment_id: str) -> Response:
        segment = self.get_object()
        data = parse(s.SegmentUpdateSerializer, request.data)
        if "rules" in data:
            if not segment.is_dynamic:
                raise refuse_rules(STATIC_HAS_NO_RULES)
            if data["rules"] is None:
                raise refuse_rules(NOT_A_TREE)  # None means "unchanged" to the service
        segment = segment_update(
            segment=segment, actor=request_actor(request), name=data.get("name"), rules=data.get("rules"),
            description=data.get("description"),
        )  # fmt: skip
        return Response(s.SegmentSerializer(segment).data)

    @extend_schema(
        responses={204: None, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Delete a segment (400 while another segment's rules refer to it).",
    )
    def destroy(self, request: Request, segment_id: str) -> Response:
        segment_delete(segment=self.get_object(), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- validate and preview ------------------------------------------------------------------
    @extend_schema(
        request=s.RulesInputSerializer,
        responses={200: s.ValidationResultSerializer, 400: ERROR_RESPONSE},
        examples=[
            *rule_examples(),
            OpenApiExample(
                "Refused",
                response_only=True,
                value={
                    "valid": False,
                    "errors": [
                        {
                            "path": "all.1.op",
                            "message": "Expected one of performed, not_performed, at_least, at_most, exactly.",
                        }
                    ],
                },
            ),
        ],
        description=(
            "Check a rule tree without saving it: 200 with `valid` and the validator's errors (path and message). "
            'A body that is not `{"rules": ...}` is a 400.'
        ),
    )
    @action(detail=False, methods=["post"])
    def validate(self, request: Request) -> Response:
        data = parse(s.RulesInputSerializer, request.data)
        segment_id = data["segment"].pk if data.get("segment") else None
        errors = validate_rules(data["rules"], Registry.for_tenant(self.tenant), segment_id=segment_id)
        return Response({"valid": not errors, "errors": [error.as_dict() for error in errors]})

    @extend_schema(
        operation_id="segments_rules_preview",
        request=s.PreviewInputSerializer,
        responses={200: s.PreviewSerializer, 400: ERROR_RESPONSE},
        examples=[
            *rule_examples(),
            OpenApiExample(
                "A count and a sample",
                response_only=True,
                value={
                    "count": 1532,
                    "errors": [],
                    "timed_out": False,
                    "elapsed_ms": 41.7,
                    "sample": [
                        {
                            "id": 90211,
                            "email": "lea@example.de",
                            "phone": "",
                            "first_name": "Lea",
                            "last_name": "Wolf",
                            "country": "DE",
                            "lifecycle_stage": "lead",
                        }
                    ],
                },
            ),
        ],
        description=(
            "Count the contacts a tree matches now and show the newest few, without saving anything. An invalid "
            "tree answers 200 with `errors` and a null count (as the builder shows them while typing); a count "
            "that runs past the time limit answers `timed_out`."
        ),
    )
    @action(detail=False, methods=["post"], url_path="preview")
    def preview_rules(self, request: Request) -> Response:
        data = parse(s.PreviewInputSerializer, request.data)
        preview = segment_preview(
            tenant=self.tenant, rules=data["rules"], segment=data.get("segment"), sample_size=data["sample_size"]
        )
        return Response(preview.as_dict())

    @extend_schema(
        request=s.SegmentPreviewInputSerializer,
        responses={200: s.PreviewSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=[OpenApiExample("The saved rules", value={}, request_only=True), *rule_examples()],
        description=(
            "Count a dynamic segment's saved rules now (live, not the materialised size), or edited `rules` "
            "as this segment (a rule that leads back to it is refused as a cycle)."
        ),
    )
    @action(detail=True, methods=["post"])
    def preview(self, request: Request, segment_id: str) -> Response:
        segment = self.get_object()
        data = parse(s.SegmentPreviewInputSerializer, request.data)
        if not segment.is_dynamic:
            raise refuse_rules(STATIC_HAS_NO_RULES)
        rules = data.get("rules", segment.rules)
        preview = segment_preview(tenant=self.tenant, rules=rules, segment=segment, sample_size=data["sample_size"])
        return Response(preview.as_dict())

    # --- membership ---------------------------------------------------------------------------------
    @extend_schema(
        responses={200: s.MemberSerializer(many=True), 404: ERROR_RESPONSE},
        description=(
            "The materialised members, newest contact first, in cursor pages (`?page_size=` up to 1000). "
            "For every member as CSV: `members.csv`."
        ),
    )
    @action(detail=True, methods=["get"], pagination_class=MemberCursorPagination)
    def members(self, request: Request, segment_id: str) -> Response:
        segment = self.get_object()
        members = SegmentMember.objects.filter(tenant_id=self.tenant.pk, segment=segment)
        page = self.paginate_queryset(members.only("contact_id", "entered_at"))
        assert page is not None  # the action always paginates
        return self.get_paginated_response(s.MemberSerializer(member_rows(self.tenant.pk, page), many=True).data)

    @extend_schema(
        request=s.ContactIdsSerializer,
        responses={200: s.MembersAddedSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=[OpenApiExample("Three contacts", value={"contact_ids": [41, 42, 97]}, request_only=True)],
        description="Add contacts to a static segment (400 for a dynamic one: its rules decide).",
    )
    @members.mapping.post
    def members_add(self, request: Request, segment_id: str) -> Response:
        segment = self.get_object()
        ids = parse(s.ContactIdsSerializer, request.data)["contact_ids"]
        added = static_members_add(segment=segment, actor=request_actor(request), contact_ids=ids)
        return Response({"added": added, "size": segment.size})

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "contact_ids",
                str,
                OpenApiParameter.QUERY,
                required=False,
                description="Comma-separated contact ids, for clients that cannot send a body with DELETE.",
            )
        ],
        request=None,
        responses={200: s.MembersRemovedSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            'Remove contacts from a static segment: a JSON body `{"contact_ids": [...]}` like POST\'s, or the '
            "`contact_ids` query parameter. 400 for a dynamic segment."
        ),
    )
    @members.mapping.delete
    def members_remove(self, request: Request, segment_id: str) -> Response:
        segment = self.get_object()
        if not request.data and "contact_ids" in request.query_params:
            body: Any = {"contact_ids": [p for p in request.query_params["contact_ids"].split(",") if p.strip()]}
        else:
            body = request.data
        ids = parse(s.ContactIdsSerializer, body)["contact_ids"]
        removed = static_members_remove(segment=segment, actor=request_actor(request), contact_ids=ids)
        return Response({"removed": removed, "size": segment.size})

    @extend_schema(
        request=None,
        responses={202: s.RefreshQueuedSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "Recompute a dynamic segment's members now, in the background: 202 at once; `refreshed_at`, `size` "
            "and `materialized_version` change when it is done. Entries and exits are recorded as transitions."
        ),
    )
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, segment_id: str) -> Response:
        segment = self.get_object()
        if not segment.is_dynamic:
            raise serializers.ValidationError("A static segment's members are hand-picked: nothing to refresh.")
        from segments.tasks import refresh_segment

        tenant_id, pk = segment.tenant_id, segment.pk
        transaction.on_commit(lambda: refresh_segment.delay(tenant_id, pk))
        body = {"status": "queued", "segment": segment.pk, "version": segment.version}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    # --- overlap -----------------------------------------------------------------------------------
    @extend_schema(
        parameters=[s.OverlapQuerySerializer],
        responses={200: s.OverlapSerializer, 400: ERROR_RESPONSE},
        examples=[
            OpenApiExample(
                "Two segments",
                response_only=True,
                value={
                    "segments": [
                        {"id": 3, "name": "Leads DE/FR", "size": 1532, "refreshed_at": "2026-11-28T09:30:00Z"},
                        {"id": 5, "name": "German leads", "size": 1470, "refreshed_at": "2026-11-28T09:31:00Z"},
                    ],
                    "matrix": [[1532, 1470], [1470, 1470]],
                    "warnings": [
                        {
                            "kind": "near_duplicate",
                            "segments": [3, 5],
                            "message": "Leads DE/FR and German leads are 96% the same: consider merging them.",
                        }
                    ],
                },
            )
        ],
        description=(
            f"Members shared by each pair of segments (at most {OVERLAP_MAX_SEGMENTS}), from the materialised "
            "members, with warnings against over-segmenting: segments too small to act on, and pairs that are "
            "90 % the same."
        ),
    )
    @action(detail=False, methods=["get"], pagination_class=None)
    def overlap(self, request: Request) -> Response:
        ids = parse(s.OverlapQuerySerializer, request.query_params).get("ids")
        segments = self.get_queryset()
        if ids is None:
            chosen = list(segments.order_by("name")[:OVERLAP_MAX_SEGMENTS])
        else:
            by_id = {segment.pk: segment for segment in segments.filter(pk__in=ids)}
            missing = [pk for pk in ids if pk not in by_id]
            if missing:
                raise serializers.ValidationError(
                    {"ids": [f"No segment with id {pk} in this workspace." for pk in missing]}
                )
            chosen = [by_id[pk] for pk in ids]
        shared = shared_members(self.tenant, chosen)
        matrix = [
            [a.size if a.pk == b.pk else shared.get((min(a.pk, b.pk), max(a.pk, b.pk)), 0) for b in chosen]
            for a in chosen
        ]
        return Response(
            {
                "segments": [
                    {"id": x.pk, "name": x.name, "size": x.size, "refreshed_at": x.refreshed_at} for x in chosen
                ],
                "matrix": matrix,
                "warnings": [
                    {"kind": w.kind, "message": w.message, "segments": list(w.segments)}
                    for w in overlap_warnings(chosen, shared)
                ],
            }
        )


def member_rows(tenant_id: int, members: Sequence[SegmentMember]) -> list[dict[str, Any]]:
    """A page of members with their contact columns (one query)."""
    ids = [member.contact_id for member in members]
    found = Contact.objects.filter(tenant_id=tenant_id, pk__in=ids).values(*MEMBER_COLUMNS)
    contacts = {row["id"]: row for row in found}
    return [{**contacts[m.contact_id], "entered_at": m.entered_at} for m in members if m.contact_id in contacts]


class SegmentMembersCsvView(SegmentsAPIMixin, TenantGenericAPIView):
    """Every member of a segment as CSV."""

    model = Segment
    lookup_url_kwarg = "segment_id"

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The body is CSV whatever the client accepts; errors fall back to JSON instead of a 406.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="segments_members_csv",
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="A header row, then one row per member (contact id as segmentor_id), streamed.",
            ),
            404: ERROR_RESPONSE,
        },
        description="Download every member (a spreadsheet-safe CSV, UTF-8 with a byte-order mark). Recorded in "
        "the audit log.",
    )
    def get(self, request: Request, segment_id: str) -> StreamingHttpResponse:
        segment = self.get_object()
        lines = segment_members_csv(segment=segment, actor=request_actor(request))
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        filename = f"segment-{segment.pk}-members-{timezone.now():%Y%m%d-%H%M}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "no-store"
        return response
