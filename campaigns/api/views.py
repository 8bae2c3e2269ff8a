"""The campaigns REST API: parse, call a service or a selector, render.

Every endpoint is tenant-scoped by the API key (tenants/api/); another tenant's campaign,
run or channel configuration answers 404. GETs need any key; everything else (preview and
test sends too) a key with the write scope, as everywhere in the API. Only admins and owners
create keys (``tenants.services.api_key_create``), so a write key carries their role, channel
configuration included; a signed-in session is no key (401). A refused field answers 400 with
its path as the client wrote it: ``audience.include``, ``variants[1].html_body``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import services as campaign_services
from campaigns.api import serializers as s
from campaigns.models import Campaign, CampaignAudience, CampaignRun, ChannelConfig, Delivery, Variant
from campaigns.selectors import campaign_list, campaign_runs, delivery_list
from campaigns.sending import ChannelNotConfigured, run_progress
from campaigns.services import (
    campaign_create,
    campaign_delete,
    campaign_update,
    channel_config_delete,
    channel_config_save,
    problem_paths,
)
from contacts.models import Contact
from tenants.api.base import ERROR_RESPONSE, TenantGenericAPIView, TenantViewSet, request_actor
from tenants.api.errors import error_body
from tenants.api.pagination import IdCursorPagination

CAMPAIGN_ERROR_RESPONSE = OpenApiResponse(
    description="The error shape; fields are named by their path in the body.",
    examples=[
        OpenApiExample(
            "A template error and a foreign segment",
            value=error_body(
                "invalid",
                "Some fields are invalid.",
                {
                    "audience.include": ["No segment with id 7 in this workspace."],
                    "variants[1].html_body": ["Line 3: unexpected '}}'"],
                },
            ),
        )
    ],
)
PROBLEMS_RESPONSE = OpenApiResponse(
    description="Not ready to send: each problem under its field, e.g. `variants` or `audience`.",
    examples=[
        OpenApiExample(
            "No audience",
            value=error_body(
                "invalid", "Some fields are invalid.", {"audience": ["Choose at least one segment to send to."]}
            ),
        )
    ],
)
CAMPAIGN_EXAMPLE = OpenApiExample(
    "A newsletter with a variant for leads",
    request_only=True,
    value={
        "name": "November newsletter",
        "channel": "email",
        "schedule": "at",
        "send_at": "2026-11-30T09:00:00+01:00",
        "audience": {"include": [3, 5], "exclude": [8]},
        "variants": [
            {
                "name": "Leads",
                "target": "stage",
                "target_stage": "lead",
                "subject": "{{ contact.first_name | default: 'Hello' }}, try it free",
                "html_body": "<p>Hi {{ contact.first_name | default: 'there' }}!</p>",
                "cta_label": "Start free trial",
                "cta_url": "https://example.com/trial",
            },
            {"name": "Everyone else", "target": "default", "subject": "News", "html_body": "<p>News</p>"},
        ],
    },
)


def path_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested errors as one level keyed by path: ``variants[1].html_body``, ``audience.include[0]``."""
    found: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            elif key == "non_field_errors" and prefix:
                path = prefix
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            for inner, messages in path_errors(value, path).items():
                found.setdefault(inner, []).extend(messages)
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            if detail:
                found[prefix or "non_field_errors"] = [str(item) for item in detail]
        else:
            for index, item in enumerate(detail):
                for inner, messages in path_errors(item, f"{prefix}[{index}]").items():
                    found.setdefault(inner, []).extend(messages)
    else:
        found[prefix or "non_field_errors"] = [str(detail)]
    return found


def parse(serializer_class: type[serializers.Serializer], data: Any, **kwargs: Any) -> Any:
    serializer = serializer_class(data=data, **kwargs)
    if not serializer.is_valid():
        raise serializers.ValidationError(path_errors(serializer.errors))
    return serializer.validated_data


def as_plain(value: Any) -> Any:
    """A service's result value (a dataclass, or anything with ``as_dict``) as JSON-ready data."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def campaign_queryset(queryset: QuerySet[Campaign]) -> QuerySet[Campaign]:
    return queryset.prefetch_related(
        Prefetch("audience", queryset=CampaignAudience.all_tenants.order_by("segment_id")),
        Prefetch("variants", queryset=Variant.all_tenants.order_by("position", "id")),
    )


class CampaignCursorPagination(IdCursorPagination):
    """Newest campaign first."""


@extend_schema_view(
    list=extend_schema(
        parameters=[s.CampaignFilterSerializer],
        responses={200: s.CampaignSerializer, 400: ERROR_RESPONSE},
        description="The workspace's campaigns, newest first, with their audience and variants. Filter by status, "
        "channel, or part of the name or description (`search`).",
    ),
    retrieve=extend_schema(responses={200: s.CampaignSerializer, 404: ERROR_RESPONSE}),
)
class CampaignViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Campaigns: what to send to which segments, on which channel, when."""

    model = Campaign
    serializer_class = s.CampaignSerializer
    lookup_url_kwarg = "campaign_id"
    pagination_class = CampaignCursorPagination

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        queryset = queryset.filter(kind=Campaign.Kind.CAMPAIGN)  # journey steps: /journeys/
        if self.action == "list":
            # The selector is scoped by its tenant argument, as the base queryset is.
            filters = parse(s.CampaignFilterSerializer, self.request.query_params)
            return campaign_queryset(campaign_list(tenant=self.tenant, **filters))
        if self.action == "retrieve":
            return campaign_queryset(queryset)
        return queryset

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, ChannelNotConfigured):
            # A test send or preview on a channel with no usable provider: the client can fix that.
            exc = serializers.ValidationError({"channel": [str(exc)]})
        return super().handle_exception(exc)

    def saved(self, campaign: Campaign, warnings: dict[str, list[str]], code: int = 200) -> Response:
        campaign = campaign_queryset(Campaign.objects.filter(tenant_id=self.tenant.pk)).get(pk=campaign.pk)
        campaign.warnings = warnings  # type: ignore[attr-defined]
        return Response(s.CampaignSavedSerializer(campaign).data, status=code)

    def write_data(self, request: Request) -> dict[str, Any]:
        # Partial for create too: only what the client sent is applied (the model's defaults fill the rest).
        return dict(
            parse(s.CampaignWriteSerializer, request.data, partial=True, tenant_time_zone=self.tenant.time_zone)
        )

    # --- CRUD ------------------------------------------------------------------------------------
    @extend_schema(
        request=s.CampaignWriteSerializer,
        responses={201: s.CampaignSavedSerializer, 400: CAMPAIGN_ERROR_RESPONSE},
        examples=[CAMPAIGN_EXAMPLE],
        description=(
            "Create a draft campaign with its audience and variants. Templates are checked (400 with the field "
            "path and the line); unknown variables come back as `warnings`. Schedule fields are checked when "
            "given: `send_at` in the future for `at`, a five-field `crontab` for `recurring`, `local_time` for "
            "`local_time`. Nothing is sent until `schedule/`."
        ),
    )
    def create(self, request: Request) -> Response:
        data = self.write_data(request)
        if "name" not in data:
            raise serializers.ValidationError({"name": ["This field is required."]})
        campaign, check = campaign_create(tenant=self.tenant, actor=request_actor(request), data=data)
        return self.saved(campaign, check.warnings, status.HTTP_201_CREATED)

    @extend_schema(
        request=s.CampaignWriteSerializer,
        responses={200: s.CampaignSavedSerializer, 400: CAMPAIGN_ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "Change a draft, scheduled or paused campaign: any fields; `audience` replaces both lists; `variants` "
            "replaces the list (name a variant's `id` to keep it). A scheduled campaign is rescheduled when its "
            "timing changes; a paused one keeps its variants (edit, do not remove). Sending, sent and cancelled "
            "campaigns are read-only (400 with the reason)."
        ),
    )
    def partial_update(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        campaign, check = campaign_update(
            campaign=campaign, actor=request_actor(request), data=self.write_data(request)
        )
        return self.saved(campaign, check.warnings)

    @extend_schema(
        responses={204: None, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Delete a draft or cancelled campaign (400 otherwise: cancel it first; sent ones stay).",
    )
    def destroy(self, request: Request, campaign_id: str) -> Response:
        campaign_delete(campaign=self.get_object(), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- state ---------------------------------------------------------------------------------------
    @extend_schema(
        request=None,
        responses={200: s.CampaignSerializer, 400: PROBLEMS_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "Send per the campaign's schedule: `now` starts a run at once; `at`, `recurring` and `local_time` "
            "wait for their time. 400 lists what stops it (no audience, no variant, template errors…)."
        ),
    )
    @action(detail=True, methods=["post"])
    def schedule(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        problems = campaign_services.campaign_problems(campaign=campaign)
        if problems:
            raise serializers.ValidationError(problem_paths(campaign, problems))
        campaign_services.campaign_schedule(campaign=campaign, actor=request_actor(request))
        return self.state(campaign)

    def state(self, campaign: Campaign) -> Response:
        fresh = campaign_queryset(Campaign.objects.filter(tenant_id=self.tenant.pk)).get(pk=campaign.pk)
        return Response(s.CampaignSerializer(fresh).data)

    @extend_schema(
        request=None,
        responses={200: s.CampaignSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Stop sending (the current batch finishes) or hold a scheduled campaign; 400 in other states.",
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        campaign_services.campaign_pause(campaign=campaign, actor=request_actor(request))
        return self.state(campaign)

    @extend_schema(
        request=None,
        responses={200: s.CampaignSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Continue a paused campaign where it stopped; 400 unless paused.",
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        campaign_services.campaign_resume(campaign=campaign, actor=request_actor(request))
        return self.state(campaign)

    @extend_schema(
        request=None,
        responses={200: s.CampaignSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "Cancel a scheduled, sending or paused campaign: its schedule is removed and unsent deliveries are "
            "skipped as cancelled. 400 for a draft, a sent or a cancelled campaign."
        ),
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        campaign_services.campaign_cancel(campaign=campaign, actor=request_actor(request))
        return self.state(campaign)

    # --- content ---------------------------------------------------------------------------------------
    def contact_and_variant(self, campaign: Campaign, data: dict[str, Any]) -> tuple[Contact, Variant]:
        contact = Contact.objects.filter(tenant_id=self.tenant.pk, pk=data["contact_id"]).first()
        if contact is None:
            raise serializers.ValidationError({"contact_id": [f"No contact with id {data['contact_id']}."]})
        variants = Variant.objects.filter(tenant_id=self.tenant.pk, campaign=campaign)
        if data.get("variant_id") is not None:
            variant = variants.filter(pk=data["variant_id"]).first()
            if variant is None:
                raise serializers.ValidationError(
                    {"variant_id": [f"No variant with id {data['variant_id']} in this campaign."]}
                )
        else:
            variant = variants.order_by("position", "id").first()
            if variant is None:
                raise serializers.ValidationError({"variant_id": ["The campaign has no variant yet."]})
        return contact, variant

    @extend_schema(
        operation_id="campaigns_send_test",
        request=s.SendTestInputSerializer,
        responses={200: s.SendTestResultSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=[
            OpenApiExample(
                "To yourself", request_only=True, value={"contact_id": 41, "to": "me@example.com", "variant_id": 9}
            )
        ],
        description=(
            "Send one message, rendered as a contact, to an address of your choosing (marked as a test; no "
            "delivery is recorded). The provider's answer comes back as `status`."
        ),
    )
    @action(detail=True, methods=["post"], url_path="send-test")
    def send_test(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        data = parse(s.SendTestInputSerializer, request.data)
        contact, variant = self.contact_and_variant(campaign, data)
        result = campaign_services.campaign_send_test(
            campaign=campaign, variant=variant, contact=contact, to=data["to"], actor=request_actor(request),
            channel=data.get("channel"),
        )  # fmt: skip
        return Response(
            {"status": str(result.status), "provider_message_id": result.provider_message_id, "error": result.error}
        )

    @extend_schema(
        request=s.MessagePreviewInputSerializer,
        responses={200: s.MessagePreviewSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="The message one contact would get from a variant: rendered, with template warnings.",
    )
    @action(detail=True, methods=["post"])
    def preview(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        data = parse(s.MessagePreviewInputSerializer, request.data)
        contact, variant = self.contact_and_variant(campaign, data)
        preview = campaign_services.campaign_preview(
            campaign=campaign, variant=variant, contact=contact, channel=data.get("channel")
        )
        return Response(as_plain(preview))

    @extend_schema(
        responses={200: s.EstimateSerializer, 404: ERROR_RESPONSE},
        description=(
            "How many contacts the audience holds now, and how many of them would be left out for missing "
            "consent, suppression, the frequency cap, no address or a pause: `sendable` is what would go out."
        ),
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def estimate(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        return Response(as_plain(campaign_services.audience_estimate(campaign=campaign)))

    # --- runs ----------------------------------------------------------------------------------------------
    @extend_schema(
        responses={200: s.RunSerializer(many=True), 404: ERROR_RESPONSE},
        description="The campaign's runs (one per send; a recurring campaign has one per occurrence), newest "
        "first, each with its deliveries counted by status.",
    )
    @action(detail=True, methods=["get"])
    def runs(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        page = self.paginate_queryset(campaign_runs(campaign=campaign))
        assert page is not None  # the viewset always paginates
        # The selector counts each run's deliveries by status in the page's one query.
        progress = {
            run.pk: {name: n for name in Delivery.Status.values if (n := getattr(run, f"{name}_count"))} for run in page
        }
        data = s.RunSerializer(page, many=True, context={"progress": progress}).data
        return self.get_paginated_response(data)


class RunAPIMixin:
    """A run of one of the tenant's campaigns: another tenant's campaign or run is a 404."""

    tenant: Any
    kwargs: dict[str, Any]

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(kind=Campaign.Kind.CAMPAIGN)  # journey steps: /journeys/

    def run(self) -> CampaignRun:
        campaign = self.get_object()  # type: ignore[attr-defined]
        return get_object_or_404(
            CampaignRun.objects.filter(tenant_id=self.tenant.pk, campaign=campaign), pk=self.kwargs["run_id"]
        )


class RunView(RunAPIMixin, TenantGenericAPIView):
    """One run with its progress."""

    model = Campaign
    lookup_url_kwarg = "campaign_id"
    serializer_class = s.RunSerializer

    @extend_schema(
        operation_id="campaigns_runs_retrieve",
        responses={200: s.RunSerializer, 404: ERROR_RESPONSE},
        description="A run and its deliveries counted by status (poll it for a progress bar).",
    )
    def get(self, request: Request, campaign_id: str, run_id: str) -> Response:
        run = self.run()
        return Response(s.RunSerializer(run, context={"progress": {run.pk: run_progress(run=run)}}).data)


class DeliveryCursorPagination(IdCursorPagination):
    """The log in the order the run sends it: a keyset on the id, as fast on page 10,000 as on page 1."""

    ordering = "id"


class DeliveryView(RunAPIMixin, TenantGenericAPIView):
    """A run's deliveries in cursor pages."""

    model = Campaign
    lookup_url_kwarg = "campaign_id"
    serializer_class = s.DeliverySerializer
    pagination_class = DeliveryCursorPagination

    @extend_schema(
        operation_id="campaigns_runs_deliveries_list",
        parameters=[s.DeliveryFilterSerializer],
        responses={200: s.DeliverySerializer(many=True), 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "The delivery log of a run in id order (the order it is sent in), in cursor pages (`next`, "
            "`previous`; no total: runs reach millions). Filter by `status`, `skip_reason` or `contact_id`."
        ),
    )
    def get(self, request: Request, campaign_id: str, run_id: str) -> Response:
        run = self.run()
        filters = dict(parse(s.DeliveryFilterSerializer, request.query_params))
        contact_id = filters.pop("contact_id", None)
        deliveries = delivery_list(run=run, **filters)
        if contact_id is not None:
            deliveries = deliveries.filter(contact_id=contact_id)
        page = self.paginate_queryset(deliveries)
        assert page is not None
        return self.get_paginated_response(s.DeliverySerializer(page, many=True).data)


# --- channel configuration ----------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(
        responses={200: s.ChannelConfigSerializer(many=True)},
        description="The workspace's provider accounts, one per configured channel (email without one uses the "
        "platform's mail server). Secrets are never shown: `has_secret` says whether one is stored.",
    ),
    retrieve=extend_schema(responses={200: s.ChannelConfigSerializer, 404: ERROR_RESPONSE}),
)
class ChannelConfigViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Provider accounts per channel: SMS (Twilio-style), push (FCM-style), webhook signing, email."""

    model = ChannelConfig
    serializer_class = s.ChannelConfigSerializer
    lookup_url_kwarg = "channel_config_id"
    pagination_class = None

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.order_by("channel")

    def respond(self, config: ChannelConfig, code: int = 200) -> Response:
        return Response(s.ChannelConfigSerializer(config).data, status=code)

    @extend_schema(
        request=s.ChannelConfigInputSerializer,
        responses={201: s.ChannelConfigSerializer, 400: ERROR_RESPONSE},
        examples=[
            OpenApiExample(
                "Twilio",
                request_only=True,
                value={
                    "channel": "sms",
                    "backend": "twilio",
                    "settings": {
                        "base_url": "https://api.twilio.com/2010-04-01",
                        "account_sid": "AC0123456789abcdef",
                        "sender": "+4915112345678",
                    },
                    "secret": "the auth token",
                },
            )
        ],
        description=(
            "Configure a channel: `channel`, `backend`, the backend's `settings` and its `secret`. Each backend's "
            "settings are checked (twilio: base_url, account_sid, sender and a secret; fcm: base_url and a secret; "
            "webhook: a secret). 400 if the channel is configured already: change it with PUT or PATCH."
        ),
    )
    def create(self, request: Request) -> Response:
        data = parse(s.ChannelConfigInputSerializer, request.data)
        errors = {name: ["This field is required."] for name in ("channel", "backend") if name not in data}
        if errors:
            raise serializers.ValidationError(errors)
        existing = ChannelConfig.objects.filter(tenant_id=self.tenant.pk, channel=data["channel"]).first()
        if existing is not None:
            raise serializers.ValidationError(
                {"channel": [f"{data['channel']} is configured already (id {existing.pk}): change it with PATCH."]}
            )
        config = channel_config_save(tenant=self.tenant, actor=request_actor(request), **data)
        return self.respond(config, status.HTTP_201_CREATED)

    def save(self, request: Request, *, partial: bool) -> Response:
        config = self.get_object()
        data = dict(parse(s.ChannelConfigInputSerializer, request.data))
        if data.pop("channel", config.channel) != config.channel:
            raise serializers.ValidationError({"channel": ["A configuration stays with its channel."]})
        if not partial:
            if "backend" not in data:
                raise serializers.ValidationError({"backend": ["This field is required."]})
            data.setdefault("settings", {})
        config = channel_config_save(tenant=self.tenant, actor=request_actor(request), channel=config.channel, **data)
        return self.respond(config)

    @extend_schema(
        request=s.ChannelConfigInputSerializer,
        responses={200: s.ChannelConfigSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Replace the backend and its settings (`secret` omitted keeps the stored one).",
    )
    def update(self, request: Request, channel_config_id: str) -> Response:
        return self.save(request, partial=False)

    @extend_schema(
        request=s.ChannelConfigInputSerializer,
        responses={200: s.ChannelConfigSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Change some of backend, settings (replaced whole) and secret.",
    )
    def partial_update(self, request: Request, channel_config_id: str) -> Response:
        return self.save(request, partial=True)

    @extend_schema(responses={204: None, 404: ERROR_RESPONSE}, description="Forget the channel's provider account.")
    def destroy(self, request: Request, channel_config_id: str) -> Response:
        channel_config_delete(config=self.get_object(), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
