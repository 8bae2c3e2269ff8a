"""The contacts REST API: parse, call a service, render.

Every endpoint is tenant-scoped by the API key (tenants/api/); another tenant's
ids answer 404. Writes need a key with the write scope.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.functional import cached_property
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.api import serializers as s
from contacts.consent import (
    ConsentEvidence,
    consent_change,
    consent_request_confirmation,
    suppression_add,
    suppression_remove,
)
from contacts.ingest import contact_identify, events_ingest
from contacts.models import (
    AttributeDefinition,
    ConsentRecord,
    ConsentSource,
    Contact,
    Suppression,
)
from contacts.normalize import address_hash
from contacts.privacy import contact_erase, contact_export
from contacts.services import (
    attribute_define,
    attribute_delete,
    attribute_update,
    contact_update,
    contact_upsert,
    contacts_bulk_upsert,
)
from tenants.api.base import ERROR_RESPONSE, TenantViewSet, parse, request_actor
from tenants.models import Tenant


def request_tenant(request: Request) -> Tenant:
    return request._request.tenant  # type: ignore[attr-defined]


def prefers_async(request: Request) -> bool:
    """Whether the client sent ``Prefer: respond-async`` (RFC 7240; preferences are comma-separated)."""
    preferences = request.headers.get("Prefer", "")
    return any(part.split(";")[0].strip().lower() == "respond-async" for part in preferences.split(","))


def row_counts(results: list[dict[str, Any]], statuses: tuple[str, ...]) -> dict[str, int]:
    counted = Counter(row["status"] for row in results)
    return {name: counted[name] for name in statuses}


# --- contacts --------------------------------------------------------------------------------
BULK_EXAMPLES = [
    OpenApiExample(
        "Two contacts and a bad row",
        request_only=True,
        value={
            "contacts": [
                {"external_id": "u-1001", "email": "ada@example.com", "first_name": "Ada", "country": "GB"},
                {"email": "grace@example.com", "interests": ["navy", "compilers"], "attributes": {"plan": "pro"}},
                {"email": "not-an-address", "birth_date": "1990-02-30"},
            ]
        },
    ),
    OpenApiExample(
        "Per-row results",
        response_only=True,
        value={
            "counts": {"created": 1, "updated": 1, "error": 1},
            "results": [
                {"index": 0, "status": "created", "id": 41},
                {"index": 1, "status": "updated", "id": 7},
                {
                    "index": 2,
                    "status": "error",
                    "id": None,
                    "errors": {
                        "email": ["'not-an-address' is not a valid email address."],
                        "birth_date": ["'1990-02-30' is not a date (YYYY-MM-DD)."],
                    },
                },
            ],
        },
    ),
]


@extend_schema_view(
    list=extend_schema(
        parameters=[s.ContactFilterSerializer], responses={200: s.ContactSerializer, 400: ERROR_RESPONSE}
    ),
    retrieve=extend_schema(responses={200: s.ContactSerializer, 404: ERROR_RESPONSE}),
)
class ContactViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Contacts: list with filters, upsert, read and edit. There is no delete: erase a contact instead."""

    model = Contact
    serializer_class = s.ContactSerializer
    lookup_url_kwarg = "contact_id"

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.action != "list":
            return queryset
        filters = parse(s.ContactFilterSerializer, self.request.query_params)
        lookups = {
            "email": "email",
            "external_id": "external_id",
            "lifecycle_stage": "lifecycle_stage",
            "country": "country",
            "updated_since": "updated_at__gte",
        }
        return queryset.filter(**{lookups[name]: value for name, value in filters.items()})

    @extend_schema(
        request=s.ContactInputSerializer,
        responses={200: s.ContactSerializer, 201: s.ContactSerializer, 400: ERROR_RESPONSE},
        description="Create a contact, or update the one with the same external_id (else email): 201 or 200.",
    )
    def create(self, request: Request) -> Response:
        data = parse(s.ContactInputSerializer, request.data)
        contact, created = contact_upsert(tenant=self.tenant, data=data)
        return Response(s.ContactSerializer(contact).data, status=status.HTTP_201_CREATED if created else 200)

    @extend_schema(
        request=s.ContactInputSerializer,
        responses={200: s.ContactSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Change the fields sent; attributes are merged (send null to remove one).",
    )
    def partial_update(self, request: Request, contact_id: str) -> Response:
        contact = self.get_object()
        data = parse(s.ContactInputSerializer, request.data)
        contact = contact_update(contact=contact, data=data)
        return Response(s.ContactSerializer(contact).data)

    @extend_schema(
        request=s.BulkContactsSerializer,
        responses={200: s.BulkContactsResultSerializer, 400: ERROR_RESPONSE},
        examples=BULK_EXAMPLES,
        description=(
            "Create or update up to 10,000 contacts, keyed by external_id, else email. Each row gets a result; "
            "valid rows are saved even when others are rejected."
        ),
    )
    @action(detail=False, methods=["post"], url_path="bulk")
    def bulk(self, request: Request) -> Response:
        rows = parse(s.BulkContactsSerializer, request.data)["contacts"]
        results = [r.as_dict() for r in contacts_bulk_upsert(tenant=self.tenant, rows=rows)]
        return Response({"counts": row_counts(results, ("created", "updated", "error")), "results": results})

    @extend_schema(
        responses={200: s.ContactExportSerializer, 404: ERROR_RESPONSE},
        description="Everything held on the contact (GDPR art. 15), as a JSON download. The request is recorded.",
    )
    @action(detail=True, methods=["get"])
    def export(self, request: Request, contact_id: str) -> Response:
        data = contact_export(contact=self.get_object(), actor=request_actor(request))
        return Response(data, headers={"Content-Disposition": f'attachment; filename="contact-{contact_id}.json"'})

    @extend_schema(
        request=None,
        responses={200: s.PrivacyRequestSerializer, 404: ERROR_RESPONSE},
        description=(
            "Erase the contact's personal data (GDPR art. 17): profile, attributes, event properties and the "
            "consent ledger. Suppression hashes stay so the person is not messaged again."
        ),
    )
    @action(detail=True, methods=["post"])
    def erase(self, request: Request, contact_id: str) -> Response:
        privacy_request = contact_erase(contact=self.get_object(), actor=request_actor(request))
        return Response(s.PrivacyRequestSerializer(privacy_request).data)


class ContactConsentViewSet(mixins.ListModelMixin, TenantViewSet):
    """A contact's consent ledger (newest first) and new consent decisions."""

    model = ConsentRecord
    serializer_class = s.ConsentRecordSerializer

    @cached_property
    def contact(self) -> Contact:
        return get_object_or_404(Contact.objects.filter(tenant_id=self.tenant.pk), pk=self.kwargs["contact_id"])

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(contact_id=self.contact.pk)

    @extend_schema(
        request=s.ConsentChangeSerializer,
        responses={201: s.ConsentRecordSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "Record a grant or withdrawal (source api). With double_opt_in (email grants), the record is pending "
            "and a confirmation link is emailed; the consent counts once the person confirms."
        ),
    )
    def create(self, request: Request, contact_id: str) -> Response:
        contact = self.contact
        data = parse(s.ConsentChangeSerializer, request.data)
        evidence = ConsentEvidence(
            source=ConsentSource.API,
            legal_basis=data["legal_basis"],
            wording=data["wording"],
            wording_version=data["wording_version"],
            ip_address=data.get("ip_address") or request.META.get("REMOTE_ADDR") or None,
            user_agent=data.get("user_agent", request.headers.get("User-Agent", "")),
        )
        actor = request_actor(request)
        if data["double_opt_in"]:
            record = consent_request_confirmation(
                contact=contact, purpose=data["purpose"], evidence=evidence, actor=actor
            )
        else:
            record = consent_change(
                contact=contact, channel=data["channel"], purpose=data["purpose"], status=data["status"],
                evidence=evidence, actor=actor,
            )  # fmt: skip
        return Response(s.ConsentRecordSerializer(record).data, status=status.HTTP_201_CREATED)


# --- events and identify -----------------------------------------------------------------------
EVENT_EXAMPLE = {
    "event": "purchase",
    "external_id": "u-1001",
    "occurred_at": "2026-11-28T09:30:00Z",
    "properties": {"order_id": "o-5531", "items": 2, "coupon": "WINTER"},
    "revenue": "89.90",
    "currency": "EUR",
    "idempotency_key": "order-o-5531",
}


class EventView(APIView):
    """Track one event (like Segment's track)."""

    @extend_schema(
        operation_id="events_create",
        request=s.EventInputSerializer,
        responses={201: s.EventResultSerializer, 200: s.EventResultSerializer, 400: ERROR_RESPONSE},
        examples=[OpenApiExample("A purchase", value=EVENT_EXAMPLE, request_only=True)],
        description="201 when stored; 200 with status duplicate when the idempotency key was seen before.",
    )
    def post(self, request: Request) -> Response:
        [result] = events_ingest(tenant=request_tenant(request), events=[request.data])
        if result.status == "error":
            raise serializers.ValidationError(result.errors)
        code = status.HTTP_201_CREATED if result.status == "accepted" else status.HTTP_200_OK
        return Response(result.as_dict(), status=code)


class EventBatchView(APIView):
    """Track many events at once."""

    @extend_schema(
        operation_id="events_batch",
        request=s.EventBatchSerializer,
        parameters=[
            OpenApiParameter(
                "Prefer",
                str,
                OpenApiParameter.HEADER,
                required=False,
                enum=["respond-async"],
                description=(
                    "`respond-async` (RFC 7240): answer 202 as soon as the events are stored; rollups, engagement "
                    "summaries and lifecycle stages follow within seconds (a worker applies them)."
                ),
            )
        ],
        responses={200: s.EventBatchResultSerializer, 202: s.EventBatchResultSerializer, 400: ERROR_RESPONSE},
        examples=[
            OpenApiExample(
                "A batch",
                request_only=True,
                value={
                    "events": [
                        EVENT_EXAMPLE,
                        {"event": "page_view", "anonymous_id": "a-77f3", "properties": {"path": "/pricing"}},
                        {"event": "add_to_cart", "email": "ada@example.com", "occurred_at": "yesterday"},
                    ]
                },
            ),
            OpenApiExample(
                "Per-row results",
                response_only=True,
                value={
                    "counts": {"accepted": 1, "duplicate": 1, "error": 1},
                    "results": [
                        {"index": 0, "status": "duplicate", "id": None},
                        {"index": 1, "status": "accepted", "id": 90211},
                        {
                            "index": 2,
                            "status": "error",
                            "id": None,
                            "errors": {"occurred_at": ["Expected an ISO 8601 time, e.g. 2026-11-28T09:30:00Z."]},
                        },
                    ],
                },
            ),
        ],
        description=(
            "Store up to 10,000 events. Each gets a result: accepted, duplicate (idempotency key seen before) "
            "or error with reasons; the valid ones are stored even when others are rejected. With "
            "`Prefer: respond-async` the answer is 202 once the events are stored (the results are the same); "
            "rollups, engagement summaries and lifecycle stages are applied by a worker moments later."
        ),
    )
    def post(self, request: Request) -> Response:
        events = parse(s.EventBatchSerializer, request.data)["events"]
        defer = prefers_async(request)
        results = [r.as_dict() for r in events_ingest(tenant=request_tenant(request), events=events, defer_apply=defer)]
        body = {"counts": row_counts(results, ("accepted", "duplicate", "error")), "results": results}
        if defer:
            return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Preference-Applied": "respond-async"})
        return Response(body)


class IdentifyView(APIView):
    """Tie an anonymous visitor to a known contact (like Segment's identify)."""

    @extend_schema(
        operation_id="identify",
        request=s.IdentifySerializer,
        responses={200: s.ContactSerializer, 400: ERROR_RESPONSE},
        examples=[
            OpenApiExample(
                "After sign-up",
                request_only=True,
                value={"anonymous_id": "a-77f3", "traits": {"email": "ada@example.com", "first_name": "Ada"}},
            )
        ],
        description=(
            "Creates or updates the contact named by traits (external_id or email) and merges the anonymous "
            "visitor into it: events, consent and history move over; nothing is lost."
        ),
    )
    def post(self, request: Request) -> Response:
        data = parse(s.IdentifySerializer, request.data)
        try:
            contact = contact_identify(
                tenant=request_tenant(request), anonymous_id=data["anonymous_id"], traits=data["traits"],
                actor=request_actor(request),
            )  # fmt: skip
        except DjangoValidationError as error:
            # Everything but the anonymous id is about the traits (the contact's fields): say so.
            if not hasattr(error, "error_dict") or set(error.message_dict) == {"anonymous_id"}:
                raise
            raise serializers.ValidationError({"traits": error.message_dict}) from None
        return Response(s.ContactSerializer(contact).data)


# --- suppressions --------------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(
        parameters=[s.SuppressionFilterSerializer], responses={200: s.SuppressionSerializer, 400: ERROR_RESPONSE}
    ),
    destroy=extend_schema(
        responses={204: None, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Lift a manual or hard-bounce suppression. Unsubscribes, complaints and erasures stay.",
    ),
)
class SuppressionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Addresses never to message, kept as hashes (the address is only echoed when it is added)."""

    model = Suppression
    serializer_class = s.SuppressionSerializer
    lookup_url_kwarg = "suppression_id"

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.action != "list":
            return queryset
        filters = parse(s.SuppressionFilterSerializer, self.request.query_params)
        if "address" in filters:
            queryset = queryset.filter(address_hash=address_hash(filters["channel"], filters.pop("address")))
        return queryset.filter(**filters)

    @extend_schema(
        request=s.SuppressionCreateSerializer,
        responses={201: s.SuppressionCreatedSerializer, 200: s.SuppressionCreatedSerializer, 400: ERROR_RESPONSE},
        description="Suppress an address on a channel: 201, or 200 when it already was (the first reason stays).",
    )
    def create(self, request: Request) -> Response:
        data = parse(s.SuppressionCreateSerializer, request.data)
        tenant, address = self.tenant, data["address"]
        existed = Suppression.objects.filter(
            tenant=tenant, channel=data["channel"], address_hash=address_hash(data["channel"], address)
        ).exists()
        suppression = suppression_add(
            tenant=tenant, channel=data["channel"], address=address, reason=data["reason"], note=data["note"],
            actor=request_actor(request),
        )  # fmt: skip
        body = {**s.SuppressionSerializer(suppression).data, "address": address}
        return Response(body, status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED)

    def destroy(self, request: Request, suppression_id: str) -> Response:
        suppression_remove(suppression=self.get_object(), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- attribute definitions ---------------------------------------------------------------------
@extend_schema_view(
    create=extend_schema(
        request=s.AttributeCreateSerializer,
        responses={201: s.AttributeDefinitionSerializer, 400: ERROR_RESPONSE},
    ),
    partial_update=extend_schema(
        request=s.AttributeUpdateSerializer,
        responses={200: s.AttributeDefinitionSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Change the label. The key and the type cannot change once defined.",
    ),
    destroy=extend_schema(responses={204: None, 404: ERROR_RESPONSE}),
)
class AttributeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Custom contact attributes: key, label and type (text, number, boolean, date, list)."""

    model = AttributeDefinition
    serializer_class = s.AttributeDefinitionSerializer
    lookup_url_kwarg = "attribute_id"

    def create(self, request: Request) -> Response:
        data = parse(s.AttributeCreateSerializer, request.data)
        definition = attribute_define(
            tenant=self.tenant, key=data["key"], label=data.get("label") or data["key"].replace("_", " ").capitalize(),
            type=data["type"], actor=request_actor(request),
        )  # fmt: skip
        return Response(s.AttributeDefinitionSerializer(definition).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, attribute_id: str) -> Response:
        definition = self.get_object()
        data = parse(s.AttributeUpdateSerializer, request.data)
        definition = attribute_update(definition=definition, actor=request_actor(request), **data)
        return Response(s.AttributeDefinitionSerializer(definition).data)

    def destroy(self, request: Request, attribute_id: str) -> Response:
        attribute_delete(definition=self.get_object(), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
