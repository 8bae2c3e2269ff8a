"""The personalisation REST API: slots and their variants, site keys, and each slot's figures.

Parse, call personalization/services.py or a read, render. Every endpoint is tenant-scoped by the API
key (tenants/api/); another tenant's slot, variant or site key answers 404, and so does a variant
that is not the slot's. GETs need any key; everything else a key with the write scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.api.views import parse
from personalization.api import serializers as s
from personalization.figures import FigurePeriod, slot_report
from personalization.models import SiteKey, Slot, SlotVariant
from personalization.services import (
    site_key_create,
    site_key_revoke,
    site_key_rotate_identify_secret,
    site_key_update,
    slot_create,
    slot_delete,
    slot_update,
    variant_add,
    variant_delete,
    variant_move,
    variant_update,
)
from tenants.api.base import ERROR_RESPONSE, TenantGenericAPIView, TenantViewSet, request_actor
from tenants.api.pagination import IdCursorPagination

DEFAULT_FIGURE_DAYS = 30
HERO = {
    "key": "hero", "name": "Home page hero", "headline": "Welcome to the shop", "body": "New arrivals every week.",
    "cta_label": "Shop now", "cta_url": "/new",
}  # fmt: skip
VARIANT = {
    "name": "Loyal customers", "target": "stage", "target_stage": "loyal_advocate",
    "headline": "Thanks for coming back", "cta_label": "Your member offers", "cta_url": "https://shop.example/members",
}  # fmt: skip


def with_variants(slots: Iterable[Slot]) -> list[Slot]:
    """The slots, each with ``ordered_variants`` (one query for all)."""
    slots = list(slots)
    by_slot: dict[int, list[SlotVariant]] = {slot.pk: [] for slot in slots}
    if slots:
        variants = SlotVariant.objects.filter(tenant_id=slots[0].tenant_id, slot_id__in=list(by_slot))
        for variant in variants.order_by("priority", "id"):
            by_slot[variant.slot_id].append(variant)
    for slot in slots:
        slot.ordered_variants = by_slot[slot.pk]  # type: ignore[attr-defined]
    return slots


class SlotCursorPagination(CursorPagination):
    """By key, as the pages list them (keys are unique in a workspace, so the cursor is exact)."""

    ordering = "key"
    page_size_query_param = "page_size"
    max_page_size = 200


class SlotsAPIMixin:
    tenant: Any

    def slot_response(self, slot: Slot, code: int = status.HTTP_200_OK) -> Response:
        fresh = Slot.objects.filter(tenant_id=self.tenant.pk).get(pk=slot.pk)
        return Response(s.SlotSerializer(with_variants([fresh])[0]).data, status=code)


@extend_schema_view(
    retrieve=extend_schema(
        responses={200: s.SlotSerializer, 404: ERROR_RESPONSE},
        description="A slot: its key in the page, its default content, and its variants in the order they are tried.",
    ),
)
class SlotViewSet(SlotsAPIMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Website slots: named places on the tenant's site whose content depends on the visitor."""

    model = Slot
    serializer_class = s.SlotSerializer
    lookup_url_kwarg = "slot_id"
    pagination_class = SlotCursorPagination

    def retrieve(self, request: Request, slot_id: str) -> Response:
        return Response(s.SlotSerializer(with_variants([self.get_object()])[0]).data)

    @extend_schema(
        responses={200: s.SlotSerializer(many=True)},
        description="The workspace's slots by key, each with its variants in the order they are tried.",
    )
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None  # the viewset always paginates
        return self.get_paginated_response(s.SlotSerializer(with_variants(page), many=True).data)

    @extend_schema(
        request=s.SlotWriteSerializer,
        responses={201: s.SlotSerializer, 400: ERROR_RESPONSE},
        examples=[OpenApiExample("A home page hero", request_only=True, value=HERO)],
        description=(
            'Create a slot: `key` is its name in the page (`<div data-segmentor-slot="hero">`); the content is '
            "what visitors no variant fits see (and visitors without consent)."
        ),
    )
    def create(self, request: Request) -> Response:
        data = parse(s.SlotWriteSerializer, request.data)
        slot = slot_create(tenant=self.tenant, actor=request_actor(request), data=data)
        return self.slot_response(slot, status.HTTP_201_CREATED)

    @extend_schema(
        request=s.SlotWriteSerializer,
        responses={200: s.SlotSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Change a slot's key, name, default content or whether it is active (any of them).",
    )
    def partial_update(self, request: Request, slot_id: str) -> Response:
        slot = self.get_object()
        data = parse(s.SlotWriteSerializer, request.data, partial=True)
        return self.slot_response(slot_update(slot=slot, actor=request_actor(request), data=data))

    @extend_schema(
        responses={204: None, 404: ERROR_RESPONSE},
        description="Delete a slot with its variants and figures: the page shows its own content there again.",
    )
    def destroy(self, request: Request, slot_id: str) -> Response:
        slot_delete(slot=self.get_object(), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[s.SlotFiguresQuerySerializer],
        responses={200: s.SlotFiguresSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "Impressions, clicks, CTR, attributed conversions and revenue of each variant and of the default "
            "content over a period (UTC days): the last `days` (default 30), or `start` to `end`. A conversion is "
            "credited to the contact's last slot click before it, within the attribution window."
        ),
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def figures(self, request: Request, slot_id: str) -> Response:
        slot = self.get_object()
        query = parse(s.SlotFiguresQuerySerializer, request.query_params)
        if query.get("start"):
            period = FigurePeriod(query["start"], query["end"])
        else:
            period = FigurePeriod.last_days(query.get("days") or DEFAULT_FIGURE_DAYS)
        slot.tenant = self.tenant
        report = slot_report(slot=slot, period=period)
        rows = [
            {"variant": row.variant.pk if row.variant else None, "name": row.label, "figures": row.figures}
            for row in report.rows
        ]
        data = {
            "slot": slot.pk, "key": slot.key, "period": {"start": period.start, "end": period.end}, "rows": rows,
            "totals": report.totals,
        }  # fmt: skip
        return Response(s.SlotFiguresSerializer(data).data)


# --- variants of a slot ----------------------------------------------------------------------------------
class SlotAPIView(SlotsAPIMixin, TenantGenericAPIView):
    """A view under /slots/{slot_id}/: another tenant's slot is a 404."""

    model = Slot
    lookup_url_kwarg = "slot_id"
    serializer_class = s.SlotSerializer

    def slot_and_variant(self, slot_variant_id: str) -> tuple[Slot, SlotVariant]:
        slot = self.get_object()
        slot.tenant = self.tenant
        variant = get_object_or_404(SlotVariant.objects.filter(tenant_id=self.tenant.pk, slot=slot), pk=slot_variant_id)
        variant.slot = slot
        return slot, variant


class SlotVariantsView(SlotAPIView):
    @extend_schema(
        operation_id="slots_variants_list",
        responses={200: s.SlotVariantSerializer(many=True), 404: ERROR_RESPONSE},
        description="The slot's variants in the order they are tried (0 first).",
    )
    def get(self, request: Request, slot_id: str) -> Response:
        slot = with_variants([self.get_object()])[0]
        return Response(s.SlotVariantSerializer(slot.ordered_variants, many=True).data)  # type: ignore[attr-defined]

    @extend_schema(
        operation_id="slots_variants_create",
        request=s.SlotVariantWriteSerializer,
        responses={201: s.SlotSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=[OpenApiExample("Loyal customers first", request_only=True, value={**VARIANT, "position": 0})],
        description=(
            "Add a variant: content for the members of a segment (`target` segment, `target_segment` id) or the "
            "contacts at a lifecycle stage (`target` stage, `target_stage`). Variants are tried in order; the "
            "first that fits wins. Without `position` it goes last. Answers the slot with its variants."
        ),
    )
    def post(self, request: Request, slot_id: str) -> Response:
        slot = self.get_object()
        slot.tenant = self.tenant
        data = parse(s.SlotVariantWriteSerializer, request.data)
        variant_add(slot=slot, actor=request_actor(request), data=data)
        return self.slot_response(slot, status.HTTP_201_CREATED)


class SlotVariantView(SlotAPIView):
    @extend_schema(
        operation_id="slots_variants_retrieve",
        responses={200: s.SlotVariantSerializer, 404: ERROR_RESPONSE},
        description="One variant of the slot: whom it is for, its place, whether it is active, its content.",
    )
    def get(self, request: Request, slot_id: str, slot_variant_id: str) -> Response:
        _slot, variant = self.slot_and_variant(slot_variant_id)
        return Response(s.SlotVariantSerializer(variant).data)

    @extend_schema(
        operation_id="slots_variants_partial_update",
        request=s.SlotVariantWriteSerializer,
        responses={200: s.SlotSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=[OpenApiExample("Switch it off", request_only=True, value={"active": False})],
        description="Change a variant's name, target, content or whether it is active (use `move/` for its place).",
    )
    def patch(self, request: Request, slot_id: str, slot_variant_id: str) -> Response:
        slot, variant = self.slot_and_variant(slot_variant_id)
        data = dict(parse(s.SlotVariantWriteSerializer, request.data, partial=True))
        if "priority" in data:
            raise serializers.ValidationError({"position": ["Move a variant with move/."]})
        variant_update(variant=variant, actor=request_actor(request), data=data)
        return self.slot_response(slot)

    @extend_schema(
        operation_id="slots_variants_destroy",
        responses={204: None, 404: ERROR_RESPONSE},
        description="Delete a variant with its figures (deactivate it to keep them); the others close up.",
    )
    def delete(self, request: Request, slot_id: str, slot_variant_id: str) -> Response:
        _slot, variant = self.slot_and_variant(slot_variant_id)
        variant_delete(variant=variant, actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SlotVariantMoveView(SlotAPIView):
    @extend_schema(
        operation_id="slots_variants_move",
        request=s.SlotVariantMoveSerializer,
        responses={200: s.SlotSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=[OpenApiExample("Try it first", request_only=True, value={"position": 0})],
        description="Move a variant to `position` (0: tried first; past the end: last); the others keep their order.",
    )
    def post(self, request: Request, slot_id: str, slot_variant_id: str) -> Response:
        slot, variant = self.slot_and_variant(slot_variant_id)
        data = parse(s.SlotVariantMoveSerializer, request.data)
        variant_move(variant=variant, position=data["position"], actor=request_actor(request))
        return self.slot_response(slot)


# --- site keys ----------------------------------------------------------------------------------------------
@extend_schema_view(
    retrieve=extend_schema(
        responses={200: s.SiteKeySerializer, 404: ERROR_RESPONSE},
        description="A site key: its public key (for the snippet), allowed origins and whether identify is signed.",
    ),
    list=extend_schema(
        responses={200: s.SiteKeySerializer(many=True)},
        description="The workspace's site keys, newest first (revoked ones too). The identify secret is never listed.",
    ),
)
class SiteKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Public keys for the website snippet: they may send events and read slot content, from their origins only."""

    model = SiteKey
    serializer_class = s.SiteKeySerializer
    lookup_url_kwarg = "site_key_id"
    pagination_class = IdCursorPagination

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.order_by("-id")

    def key(self) -> SiteKey:
        site_key: SiteKey = self.get_object()
        site_key.tenant = self.tenant
        return site_key

    @extend_schema(
        request=s.SiteKeyWriteSerializer,
        responses={201: s.SiteKeyWithSecretSerializer, 400: ERROR_RESPONSE},
        examples=[
            OpenApiExample(
                "The shop's key",
                request_only=True,
                value={"name": "Shop", "allowed_origins": ["https://shop.example", "https://www.shop.example"]},
            )
        ],
        description=(
            "Create a public key for the snippet, limited to `allowed_origins`. The answer carries the "
            "`identify_secret` (your server signs identify calls with it) — the only time it is shown."
        ),
    )
    def create(self, request: Request) -> Response:
        data = parse(s.SiteKeyWriteSerializer, request.data)
        site_key = site_key_create(tenant=self.tenant, actor=request_actor(request), **data)
        return Response(s.SiteKeyWithSecretSerializer(site_key).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=s.SiteKeyWriteSerializer,
        responses={200: s.SiteKeySerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Rename a key, change its origins or whether identify must be signed; it applies at once.",
    )
    def partial_update(self, request: Request, site_key_id: str) -> Response:
        site_key = self.key()
        data = parse(s.SiteKeyWriteSerializer, request.data, partial=True)
        return Response(
            s.SiteKeySerializer(site_key_update(site_key=site_key, actor=request_actor(request), **data)).data
        )

    @extend_schema(
        request=None,
        responses={200: s.SiteKeySerializer, 404: ERROR_RESPONSE},
        description="Revoke a key: the snippet using it is refused from the next request on. Revoking is final.",
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, site_key_id: str) -> Response:
        return Response(s.SiteKeySerializer(site_key_revoke(site_key=self.key(), actor=request_actor(request))).data)

    @extend_schema(
        request=None,
        responses={200: s.SiteKeyWithSecretSerializer, 404: ERROR_RESPONSE},
        description="Replace the identify secret (answered once, here); signatures made with the old one stop working.",
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, site_key_id: str) -> Response:
        site_key = site_key_rotate_identify_secret(site_key=self.key(), actor=request_actor(request))
        return Response(s.SiteKeyWithSecretSerializer(site_key).data)
