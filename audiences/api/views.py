"""The ad audiences REST API: parse, call a service or a selector, render.

Every endpoint is tenant-scoped by the API key (tenants/api/); another tenant's destination, export
or segment answers 404. GETs need any key (a download too: it is a read); everything else a key with
the write scope.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from audiences import selectors, services
from audiences.api import serializers as s
from audiences.models import AudienceDestination, AudienceExport, AudienceFormat, ExportKind
from audiences.views import download_response
from campaigns.api.views import parse
from segments.models import Segment
from tenants.api.base import ERROR_RESPONSE, TenantGenericAPIView, TenantViewSet, request_actor

DESTINATION_EXAMPLE = OpenApiExample(
    "Daily to Google",
    request_only=True,
    value={
        "name": "Warm leads → Google",
        "segment": 12,
        "kind": "audience",
        "format": "google",
        "url": "https://hooks.example.com/audiences/warm-leads",
        "secret": "a long random signing secret",
        "schedule": "crontab",
        "crontab": "0 6 * * *",
    },
)


@extend_schema_view(
    list=extend_schema(description="Every destination of the workspace (the secret is never shown)."),
    retrieve=extend_schema(responses={200: s.DestinationSerializer, 404: ERROR_RESPONSE}),
)
class DestinationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """HTTPS endpoints that receive a segment's audience file on a schedule, signed."""

    model = AudienceDestination
    serializer_class = s.DestinationSerializer
    lookup_url_kwarg = "destination_id"

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("segment", "periodic_task", "tenant")

    def respond(self, destination: AudienceDestination, code: int = status.HTTP_200_OK) -> Response:
        return Response(s.DestinationSerializer(destination).data, status=code)

    def data(self, request: Request) -> dict[str, Any]:
        data = dict(parse(s.DestinationInputSerializer, request.data))
        if "segment" in data:
            segment = Segment.objects.filter(tenant_id=self.tenant.pk, pk=data["segment"]).first()
            if segment is None:
                raise serializers.ValidationError({"segment": ["No such segment in this workspace."]})
            data["segment"] = segment
        return data

    @extend_schema(
        request=s.DestinationInputSerializer,
        responses={201: s.DestinationSerializer, 400: ERROR_RESPONSE},
        examples=[DESTINATION_EXAMPLE],
        description="Create a destination: `name`, `segment`, `format` (google or meta), `kind`, an https `url`, a "
        "signing `secret` and a `schedule` (`interval` with `interval_minutes`, or `crontab`). Its beat entry is "
        "created with it.",
    )
    def create(self, request: Request) -> Response:
        destination = services.destination_create(
            tenant=self.tenant, actor=request_actor(request), data=self.data(request)
        )
        return self.respond(destination, status.HTTP_201_CREATED)

    def save(self, request: Request) -> Response:
        destination = self.get_object()
        destination = services.destination_update(
            destination=destination, actor=request_actor(request), data=self.data(request)
        )
        return self.respond(destination)

    @extend_schema(
        request=s.DestinationInputSerializer,
        responses={200: s.DestinationSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Change a destination (fields left out keep their values; an omitted secret keeps the stored one).",
    )
    def update(self, request: Request, destination_id: str) -> Response:
        return self.save(request)

    @extend_schema(
        request=s.DestinationInputSerializer,
        responses={200: s.DestinationSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Change some fields of a destination.",
    )
    def partial_update(self, request: Request, destination_id: str) -> Response:
        return self.save(request)

    @extend_schema(responses={204: None, 404: ERROR_RESPONSE}, description="Delete a destination; its exports stay.")
    def destroy(self, request: Request, destination_id: str) -> Response:
        services.destination_delete(destination=self.get_object(), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None,
        responses={202: s.ExportSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Run now: queue an export to the destination (a worker builds and pushes it). 400 while the "
        "destination's previous export is still in flight.",
    )
    @action(detail=True, methods=["post"])
    def run(self, request: Request, destination_id: str) -> Response:
        export = services.destination_run_now(destination=self.get_object(), actor=request_actor(request))
        return Response(s.ExportSerializer(export).data, status=status.HTTP_202_ACCEPTED)


class ExportFilterSerializer(serializers.Serializer):
    destination = serializers.IntegerField(min_value=1, required=False)
    segment = serializers.IntegerField(min_value=1, required=False)


@extend_schema_view(
    list=extend_schema(
        parameters=[ExportFilterSerializer],
        description="Every export, newest first: downloads and pushes, with the segment version, counts, the "
        "members left out by reason and the file's SHA-256.",
        responses={200: s.ExportSerializer(many=True), 400: ERROR_RESPONSE},
    ),
    retrieve=extend_schema(responses={200: s.ExportSerializer, 404: ERROR_RESPONSE}),
)
class ExportViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    model = AudienceExport
    serializer_class = s.ExportSerializer
    lookup_url_kwarg = "export_id"

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if getattr(self, "action", None) == "list":
            filters = parse(ExportFilterSerializer, self.request.query_params)
            if "destination" in filters:
                queryset = queryset.filter(destination_id=filters["destination"])
            if "segment" in filters:
                queryset = queryset.filter(segment_id=filters["segment"])
        return queryset


class DownloadQuerySerializer(serializers.Serializer):
    format = s.AudienceChoiceField(choices=AudienceFormat.choices, default=AudienceFormat.GOOGLE)
    kind = s.AudienceChoiceField(choices=ExportKind.choices, default=ExportKind.AUDIENCE)


class SegmentAudienceDownloadView(TenantGenericAPIView):
    """A segment's audience file, streamed."""

    model = Segment
    lookup_url_kwarg = "segment_id"

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The body is CSV whatever the client accepts; errors fall back to JSON instead of a 406.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="audiences_segment_download",
        parameters=[DownloadQuerySerializer],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="The header row of the format, then one row per exported contact (SHA-256 hex; Google's "
                "Country and Zip in clear), streamed. `X-Segmentor-Export` names the export record.",
            ),
            400: ERROR_RESPONSE,
            404: ERROR_RESPONSE,
        },
        description="Download the segment as an ad audience (`format`: google or meta; `kind`: audience or "
        "lookalike_seed). Only members with advertising consent, not suppressed, not erased. Recorded as an export.",
    )
    def get(self, request: Request, segment_id: str) -> StreamingHttpResponse:
        segment = self.get_object()
        query = parse(DownloadQuerySerializer, request.query_params)
        export = services.export_start(
            segment=segment, format=query["format"], kind=query["kind"], actor=request_actor(request),
            trigger=AudienceExport.Trigger.DOWNLOAD,
        )  # fmt: skip
        return download_response(services.download_stream(export=export), export)


class LookalikeView(TenantGenericAPIView):
    """What describes a lookalike seed."""

    model = Segment
    lookup_url_kwarg = "segment_id"
    serializer_class = s.LookalikeSerializer

    @extend_schema(
        responses={200: s.LookalikeSerializer, 404: ERROR_RESPONSE},
        description="The segment as a lookalike seed against every contact: top countries, lifecycle stages and "
        "psychographic tags (share in the seed, share overall, lift), and value figures (average order value, "
        "revenue per contact, buyer share, predicted CLV) from the customer value figures.",
    )
    def get(self, request: Request, segment_id: str) -> Response:
        segment = self.get_object()
        return Response(selectors.lookalike_summary(segment=segment).as_dict())
