"""The campaign pages: list, the composer in five steps, the campaign page, progress and the delivery log.

The composer saves at every step, so a draft can be left and resumed; back and forth keeps what was
typed. The htmx fragments (live audience count, live preview, test send, progress) call the same
services as the API.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from csp.constants import NONE, SELF
from csp.decorators import csp_replace
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.forms import BaseForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.decorators import method_decorator

from campaigns import scheduling, selectors, services
from campaigns.channels.base import sms_segments
from campaigns.forms import (
    CTA_BY_STAGE,
    CTA_DEFAULT,
    SENDER_FIELDS,
    AudienceForm,
    BasicsForm,
    CampaignFilterForm,
    DeliveryFilterForm,
    PreviewContactForm,
    ScheduleForm,
    SenderForm,
    TestSendForm,
    VariantForm,
    describe_crontab,
    suggested_cta,
)
from campaigns.models import Campaign, CampaignAudience, CampaignChannel, CampaignRun, Variant
from campaigns.sending import run_progress
from campaigns.services import EDITABLE, READ_ONLY_REASON, campaign_create, campaign_update
from campaigns.validation import CHANNEL_TEMPLATE_FIELDS, campaign_channels
from contacts.models import Contact, LifecycleStage
from tenants.audit import Actor
from tenants.roles import Permission
from tenants.web import TenantView, add_service_errors

DELIVERY_PAGE_SIZE = 50
PLANNED = frozenset({Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.PAUSED})
ACTIVE_RUN = frozenset({CampaignRun.Status.PENDING, CampaignRun.Status.SENDING})


@dataclass(frozen=True)
class Step:
    key: str
    label: str


STEPS = (
    Step("basics", "Basics"),
    Step("audience", "Audience"),
    Step("content", "Content"),
    Step("schedule", "Schedule"),
    Step("review", "Review"),
)
STEP_KEYS = [s.key for s in STEPS]
# Where a problem's field is fixed: the review links each problem to its step.
FIELD_STEPS = {
    "name": "basics", "channel": "basics", "purpose": "basics", "goal_event": "basics",
    "attribution_window_hours": "basics", "cost": "basics", "throttle_per_minute": "basics",
    "preferred_channel": "basics", "preferred_channels": "basics",
    "audience": "audience", "include": "audience", "exclude": "audience", "segments": "audience",
    "schedule": "schedule", "send_at": "schedule", "crontab": "schedule", "local_time": "schedule",
}  # fmt: skip


def _is_partial(request: HttpRequest, target: str) -> bool:
    """An htmx request that swaps only ``target`` (not a history restore, which needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and htmx.target == target and not htmx.history_restore_request  # type: ignore[union-attr]


Child = TypeVar("Child", Variant, CampaignRun)


class CampaignsView(TenantView):
    """Base for the campaign pages: the acting person, the campaign and run in the URL."""

    def actor(self) -> Actor:
        return Actor.for_user(self.membership.user)

    def campaign(self, campaign_id: int) -> Campaign:
        campaign = self.get_tenant_object(Campaign, campaign_id)
        if campaign.kind != Campaign.Kind.CAMPAIGN:
            raise Http404  # a journey's send step: edited and reported on the journey's pages
        campaign.tenant = self.tenant  # the same row, already loaded: spare the services a query
        return campaign

    def variant(self, campaign: Campaign, variant_id: int) -> Variant:
        return self._of_campaign(Variant, campaign, variant_id)

    def run(self, campaign: Campaign, run_id: int) -> CampaignRun:
        return self._of_campaign(CampaignRun, campaign, run_id)

    def _of_campaign(self, model: type[Child], campaign: Campaign, pk: int) -> Child:
        """A variant or run of this campaign: another campaign's (or tenant's) is a 404 like a missing one."""
        child = get_object_or_404(model.objects.filter(tenant=self.tenant, campaign=campaign), pk=pk)
        child.campaign = campaign
        return child

    def url(self, name: str, campaign: Campaign | None = None, **kwargs: Any) -> str:
        kwargs["tenant_slug"] = self.tenant.slug
        if campaign is not None:
            kwargs["campaign_id"] = campaign.pk
        return reverse(f"campaigns:{name}", kwargs=kwargs)


# --- list ----------------------------------------------------------------------------------------
class CampaignListView(CampaignsView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = CampaignFilterForm(request.GET)
        status = 200
        rows: list[dict[str, Any]] = []
        if form.is_valid():
            rows = selectors.campaign_rows(self.tenant, **form.cleaned_data)
        else:
            status = 400
        context = {"form": form, "rows": rows, "filters_active": form.active, "page_size": selectors.LIST_PAGE_SIZE}
        partial = _is_partial(request, "campaign-results")
        template = "campaigns/_campaign_table.html" if partial else "campaigns/campaign_list.html"
        response = render(request, template, context, status=status)
        patch_vary_headers(response, ["HX-Request", "HX-Target"])
        return response


# --- the composer --------------------------------------------------------------------------------
class ComposerView(CampaignsView):
    """A step of the composer: editors only; a campaign that is sending or sent is not edited here."""

    read_permission = Permission.EDIT_CONTENT  # the composer is of no use to someone who cannot save
    step: str = ""

    def editable(self, campaign_id: int) -> Campaign:
        campaign = self.campaign(campaign_id)
        if campaign.status not in EDITABLE:
            raise _NotEditable(campaign)
        return campaign

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().dispatch(request, *args, **kwargs)
        except _NotEditable as stop:
            messages.info(request, READ_ONLY_REASON.get(stop.campaign.status, "This campaign cannot be edited."))
            return redirect(self.url("detail", stop.campaign))

    def page(
        self, template: str, campaign: Campaign | None, context: dict[str, Any], status: int = 200
    ) -> HttpResponse:
        context.update({"campaign": campaign, "steps": STEPS, "step": self.step})
        return render(self.request, template, context, status=status)

    def update(
        self, campaign: Campaign, form: BaseForm | None, data: dict[str, Any], *, variant_index: int | None = None
    ) -> bool:
        """Save ``data`` through the campaign service; its errors go on ``form`` (else into messages)."""
        try:
            saved, _ = campaign_update(campaign=campaign, actor=self.actor(), data=data)
        except ValidationError as error:
            if form is None:
                for message in error.messages:
                    messages.error(self.request, message)
            else:
                add_service_errors(form, error, lambda path, _message: _form_field(path, variant_index))
            return False
        campaign.status = saved.status
        return True

    def next_url(self, campaign: Campaign) -> str:
        """Where "save" leads: the previous or next step, or this one again."""
        go = self.request.POST.get("go", "next")
        index = STEP_KEYS.index(self.step)
        if go == "prev" and index > 0:
            return self.url(STEP_KEYS[index - 1], campaign)
        if go == "stay":
            return self.url(self.step, campaign)
        if go == "leave":
            return self.url("detail", campaign)
        return self.url(STEP_KEYS[min(index + 1, len(STEP_KEYS) - 1)], campaign)


class _NotEditable(Exception):
    def __init__(self, campaign: Campaign) -> None:
        super().__init__(campaign.pk)
        self.campaign = campaign


class CampaignCreateView(ComposerView):
    step = "basics"

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.page("campaigns/step_basics.html", None, {"form": BasicsForm(tenant=self.tenant)})

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = BasicsForm(request.POST, tenant=self.tenant, instance=Campaign(tenant=self.tenant))
        if not form.is_valid():
            return self.page("campaigns/step_basics.html", None, {"form": form}, status=400)
        try:
            campaign, _ = campaign_create(tenant=self.tenant, actor=self.actor(), data=form.cleaned_data)
        except ValidationError as error:
            add_service_errors(form, error)
            return self.page("campaigns/step_basics.html", None, {"form": form}, status=400)
        messages.success(request, "Draft saved. Choose who receives it.")
        return redirect(self.next_url(campaign))


class BasicsView(ComposerView):
    step = "basics"

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        form = BasicsForm(instance=campaign, tenant=self.tenant)
        return self.page("campaigns/step_basics.html", campaign, {"form": form})

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        form = BasicsForm(request.POST, instance=campaign, tenant=self.tenant)
        if not form.is_valid():
            return self.page("campaigns/step_basics.html", campaign, {"form": form}, status=400)
        if not self.update(campaign, form, form.cleaned_data):
            return self.page("campaigns/step_basics.html", campaign, {"form": form}, status=400)
        return redirect(self.next_url(campaign))


class AudienceView(ComposerView):
    step = "audience"

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        chosen = CampaignAudience.objects.filter(tenant=self.tenant, campaign=campaign)
        initial = {
            "include": [a.segment_id for a in chosen if not a.exclude],
            "exclude": [a.segment_id for a in chosen if a.exclude],
        }
        form = AudienceForm(initial=initial, tenant=self.tenant)
        # The saved audience's count, in the page; the live count takes over as the choice changes.
        estimate = services.audience_estimate(campaign=campaign) if initial["include"] else None
        context = {"form": form, "estimate": estimate, "nobody": not initial["include"]}
        return self.page("campaigns/step_audience.html", campaign, context)

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        form = AudienceForm(request.POST, tenant=self.tenant)
        if not form.is_valid():
            return self.page("campaigns/step_audience.html", campaign, {"form": form, "estimate": None}, status=400)
        audience = {key: [s.pk for s in form.cleaned_data[key]] for key in ("include", "exclude")}
        if not self.update(campaign, form, {"audience": audience}):
            return self.page("campaigns/step_audience.html", campaign, {"form": form, "estimate": None}, status=400)
        return redirect(self.next_url(campaign))


class AudienceEstimateView(ComposerView):
    """The live count of the audience as it is being chosen (not yet saved): total, exclusions, sendable."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        form = AudienceForm(request.POST, tenant=self.tenant)
        estimate, status = None, 200
        if form.is_valid() and not form.cleaned_data["include"]:
            pass  # nobody chosen yet: nothing to count
        elif form.is_valid():
            # Count the selection on the screen, saved or not.
            estimate = services.audience_estimate(
                campaign=campaign,
                include=[segment.pk for segment in form.cleaned_data["include"]],
                exclude=[segment.pk for segment in form.cleaned_data["exclude"]],
            )
        else:
            status = 400
        context = {"estimate": estimate, "form": form, "nobody": form.is_valid() and not form.cleaned_data["include"]}
        response = render(request, "campaigns/_estimate.html", context, status=status)
        response["Cache-Control"] = "no-store"
        return response


class ContentView(ComposerView):
    """Step 3: the sender and the variants in the order they are tried."""

    step = "content"

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        return self.render_content(campaign, SenderForm(instance=campaign))

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        form = SenderForm(request.POST, instance=campaign)
        if not form.is_valid():
            return self.render_content(campaign, form, status=400)
        if form.fields and not self.update(campaign, form, form.cleaned_data):
            return self.render_content(campaign, form, status=400)
        return redirect(self.next_url(campaign))

    def render_content(self, campaign: Campaign, form: SenderForm, status: int = 200) -> HttpResponse:
        variants = list(
            Variant.objects.filter(tenant=self.tenant, campaign=campaign)
            .select_related("target_segment")
            .order_by("position", "id")
        )
        groups: dict[tuple[str, Any], int] = {}
        for variant in variants:
            key = (variant.target, variant.target_segment_id or variant.target_stage)
            groups[key] = groups.get(key, 0) + 1
        rows = [{"variant": v, "ab": groups[(v.target, v.target_segment_id or v.target_stage)] > 1} for v in variants]
        context = {
            "form": form,
            "rows": rows,
            "has_default": any(v.target == Variant.Target.DEFAULT for v in variants),
            "stages": LifecycleStage.choices,
        }
        return self.page("campaigns/step_content.html", campaign, context, status=status)


class VariantFormView(ComposerView):
    """Create or edit a variant, with the live preview and the test send beside the form."""

    step = "content"

    def render_variant(
        self, campaign: Campaign, variant: Variant | None, form: VariantForm, status: int = 200
    ) -> HttpResponse:
        preview_url = (
            self.url("variant_preview", campaign, variant_id=variant.pk) if variant else self.url("preview", campaign)
        )
        channels = campaign_channels(campaign)
        context = {
            "form": form,
            "variant": variant,
            "contact_form": PreviewContactForm(tenant=self.tenant),
            "test_form": TestSendForm(channel=campaign.channel, user_email=self.membership.user.email),
            # A preferred-channel campaign: each channel's fields under its name, and a channel to preview.
            "content_fields": [
                {
                    "field": form[name],
                    "warnings": form.field_warnings.get(name, []),
                    "heading": CampaignChannel(channel).label if len(channels) > 1 and index == 0 else "",
                }
                for channel in channels
                for index, name in enumerate(CHANNEL_TEMPLATE_FIELDS.get(channel, ()))
            ],
            "preview_channels": [(c, CampaignChannel(c).label) for c in channels] if len(channels) > 1 else [],
            "cta_warnings": form.field_warnings.get("cta_label", []) + form.field_warnings.get("cta_url", []),
            "preview_url": preview_url,
            "test_url": self.url("send_test", campaign),
            "cta_by_stage": {**CTA_BY_STAGE, "": CTA_DEFAULT},
            "suggested_cta": suggested_cta(form["target"].value() or "", form["target_stage"].value() or ""),
            "sample_contacts": list(
                Contact.objects.filter(tenant=self.tenant, erased_at__isnull=True).order_by("id")[:20]
            ),
        }
        return self.page("campaigns/variant_form.html", campaign, context, status=status)

    def save(self, campaign: Campaign, variant: Variant | None, form: VariantForm) -> HttpResponse:
        if not form.is_valid():
            return self.render_variant(campaign, variant, form, status=400)
        variants = variants_of(campaign)
        data = {name: form.cleaned_data[name] for name in form.fields if name != "target_segment"}
        data["target_segment_id"] = (
            form.cleaned_data["target_segment"].pk if form.cleaned_data["target_segment"] else None
        )
        if variant is not None:
            index = next(i for i, row in enumerate(variants) if row["id"] == variant.pk)
            variants[index] = {**variants[index], **data}
        else:
            variants.append(data)
        variants = default_last(variants)
        index = next(i for i, row in enumerate(variants) if row is data or row.get("id") == getattr(variant, "pk", 0))
        if not self.update(campaign, form, {"variants": variants}, variant_index=index):
            return self.render_variant(campaign, variant, form, status=400)
        saved = Variant.objects.filter(tenant=self.tenant, campaign=campaign).order_by("position", "id")[index]
        for warning in form.warnings:
            messages.warning(self.request, warning)
        messages.success(self.request, f"Variant “{saved.name}” saved.")
        if self.request.POST.get("go") == "stay":
            return redirect(self.url("variant_edit", campaign, variant_id=saved.pk))
        return redirect(self.url("content", campaign))


class VariantCreateView(VariantFormView):
    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        has_default = Variant.objects.filter(tenant=self.tenant, campaign=campaign, target=Variant.Target.DEFAULT)
        target = Variant.Target.SEGMENT if has_default.exists() else Variant.Target.DEFAULT
        initial = {"name": "Everyone else" if target == Variant.Target.DEFAULT else "", "target": target}
        if request.GET.get("stage"):
            initial.update({"target": Variant.Target.STAGE, "target_stage": request.GET["stage"]})
        form = VariantForm(initial=initial, campaign=campaign, instance=Variant(tenant=self.tenant, campaign=campaign))
        return self.render_variant(campaign, None, form)

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        form = VariantForm(request.POST, campaign=campaign, instance=Variant(tenant=self.tenant, campaign=campaign))
        return self.save(campaign, None, form)


class VariantEditView(VariantFormView):
    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int, variant_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        variant = self.variant(campaign, variant_id)
        return self.render_variant(campaign, variant, VariantForm(instance=variant, campaign=campaign))

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int, variant_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        variant = self.variant(campaign, variant_id)
        return self.save(campaign, variant, VariantForm(request.POST, instance=variant, campaign=campaign))


class VariantDeleteView(ComposerView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int, variant_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        variant = self.variant(campaign, variant_id)
        variants = [row for row in variants_of(campaign) if row["id"] != variant.pk]
        if self.update(campaign, None, {"variants": variants}):
            messages.success(request, f"Variant “{variant.name}” deleted.")
        return redirect(self.url("content", campaign))


class VariantMoveView(ComposerView):
    """Move a variant up or down: targets are tried in this order, the first match wins."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int, variant_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        variant = self.variant(campaign, variant_id)
        direction = request.POST.get("direction")
        if direction not in ("up", "down"):
            messages.error(request, "Move a variant up or down.")
        else:
            variants = variants_of(campaign)
            index = next(i for i, row in enumerate(variants) if row["id"] == variant.pk)
            other = index - 1 if direction == "up" else index + 1
            if 0 <= other < len(variants):
                variants[index], variants[other] = variants[other], variants[index]
                self.update(campaign, None, {"variants": default_last(variants)})
        return redirect(self.url("content", campaign) + "#variants")


class PreviewView(ComposerView):
    """The live preview: the variant as typed (unsaved), rendered for the chosen contact."""

    http_method_names = ["post"]

    def post(
        self, request: HttpRequest, tenant_slug: str, campaign_id: int, variant_id: int | None = None
    ) -> HttpResponse:
        campaign = self.editable(campaign_id)
        variant = self.variant(campaign, variant_id) if variant_id is not None else None
        instance = variant or Variant(tenant=self.tenant, campaign=campaign)
        form = VariantForm(request.POST, instance=instance, campaign=campaign)
        contact_form = PreviewContactForm(request.POST, tenant=self.tenant)
        context: dict[str, Any] = {"campaign": campaign, "form": form, "contact_form": contact_form}
        sms_text = request.POST.get("sms_body", "")
        context["sms_length"] = sms_segments(sms_text) if "sms_body" in form.fields else None
        status = 200
        if not contact_form.is_valid():
            status = 400
        elif (contact := selectors.preview_contact(campaign, contact_form.cleaned_data["preview_contact"])) is None:
            context["no_contacts"] = True
        elif form.is_valid():
            context["contact"] = contact
            try:
                context["preview"] = services.campaign_preview(
                    campaign=campaign, variant=form.instance, contact=context["contact"],
                    channel=preview_channel(request, campaign),
                )  # fmt: skip
            except ValidationError as error:
                context["preview_errors"] = error.messages
        response = render(request, "campaigns/_preview.html", context, status=status)
        response["Cache-Control"] = "no-store"
        return response


def preview_channel(request: HttpRequest, campaign: Campaign) -> str | None:
    """The channel a preferred-channel campaign's preview and test are for (None: the campaign's own)."""
    chosen = request.POST.get("channel", "")
    return chosen if chosen in campaign_channels(campaign) else None


EMAIL_FRAME_POLICY = {
    "default-src": [NONE],
    "script-src": [NONE],
    "style-src": ["'unsafe-inline'"],
    "img-src": ["https:", "data:"],
    "font-src": ["https:", "data:"],
    "form-action": [NONE],
    "frame-ancestors": [SELF],
    "sandbox": True,
}


class EmailFrameView(ComposerView):
    """The preview's email HTML as a document of its own, for the preview's iframe.

    Emails carry inline styles, which the pages' policy forbids; this document gets a policy of
    its own: styles and images, no script, sandboxed into an opaque origin, framed by us only.
    """

    http_method_names = ["post"]

    @method_decorator(csp_replace(EMAIL_FRAME_POLICY))
    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        variant_id = request.POST.get("variant_id", "")
        variant = self.variant(campaign, int(variant_id)) if variant_id.isdigit() else None
        form = VariantForm(
            request.POST, instance=variant or Variant(tenant=self.tenant, campaign=campaign), campaign=campaign
        )
        contact_form = PreviewContactForm(request.POST, tenant=self.tenant)
        markup = ""
        if form.is_valid() and contact_form.is_valid():
            contact = selectors.preview_contact(campaign, contact_form.cleaned_data["preview_contact"])
            if contact is not None:
                try:
                    markup = services.campaign_preview(
                        campaign=campaign, variant=form.instance, contact=contact,
                        channel=preview_channel(request, campaign),
                    ).html  # fmt: skip
                except ValidationError:
                    markup = ""
        response = HttpResponse(markup or "<!DOCTYPE html><title>No preview</title>", content_type="text/html")
        response["Cache-Control"] = "no-store"
        response["X-Frame-Options"] = "SAMEORIGIN"
        return response


class SendTestView(ComposerView):
    """Send the variant as typed to yourself (email) or to a number (SMS), rendered as the chosen contact."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        variant_id = request.POST.get("variant_id", "")
        variant = self.variant(campaign, int(variant_id)) if variant_id.isdigit() else None
        instance = variant or Variant(tenant=self.tenant, campaign=campaign)
        form = VariantForm(request.POST, instance=instance, campaign=campaign)
        contact_form = PreviewContactForm(request.POST, tenant=self.tenant)
        channel = preview_channel(request, campaign)
        test_form = TestSendForm(
            request.POST, channel=channel or campaign.channel, user_email=self.membership.user.email
        )
        context: dict[str, Any] = {"test_form": test_form}
        status = 400
        if not (form.is_valid() and contact_form.is_valid() and test_form.is_valid()):
            context["errors"] = [
                f"{f.fields[name].label if name in f.fields else ''}{': ' if name in f.fields else ''}{e}"
                for f in (test_form, contact_form, form)
                for name, errors in f.errors.items()
                for e in errors
            ]
        elif (contact := selectors.preview_contact(campaign, contact_form.cleaned_data["preview_contact"])) is None:
            context["errors"] = ["Add a contact first: a test renders the message as one of your contacts."]
        else:
            to = test_form.cleaned_data["to"]
            try:
                result = services.campaign_send_test(
                    campaign=campaign, variant=form.instance, contact=contact, to=to, actor=self.actor(),
                    channel=channel,
                )  # fmt: skip
            except ValidationError as error:
                context["errors"] = error.messages
            else:
                status = 200
                context.update({"result": result, "to": to})
        return render(request, "campaigns/_test_result.html", context, status=status)


class ScheduleView(ComposerView):
    step = "schedule"

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        return self.render_schedule(campaign, ScheduleForm(instance=campaign, tenant=self.tenant))

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        form = ScheduleForm(request.POST, instance=campaign, tenant=self.tenant)
        if not form.is_valid():
            return self.render_schedule(campaign, form, status=400)
        data = {name: form.cleaned_data[name] for name in ("schedule", "send_at", "crontab", "local_time", "best_time")}
        if campaign.status == Campaign.Status.SCHEDULED and data["schedule"] == Campaign.Schedule.NOW:
            # Saving would start the send at once; sending deserves its own, confirmed, click.
            form.add_error("schedule", "To send a scheduled campaign now, use “Send now” on its page or the review.")
            return self.render_schedule(campaign, form, status=400)
        if not self.update(campaign, form, data):
            return self.render_schedule(campaign, form, status=400)
        if campaign.status == Campaign.Status.SCHEDULED:
            messages.info(request, f"The schedule is updated: {schedule_text(campaign)}.")
        return redirect(self.next_url(campaign))

    def render_schedule(self, campaign: Campaign, form: ScheduleForm, status: int = 200) -> HttpResponse:
        crontab = form["crontab"].value() or ""
        context = {"form": form, "crontab_text": describe_crontab(crontab) if crontab else ""}
        return self.page("campaigns/step_schedule.html", campaign, context, status=status)


class CrontabExplainView(ComposerView):
    """The crontab in words, as it is typed."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        self.editable(campaign_id)
        crontab = " ".join(request.POST.get("crontab", "").split())[:100]
        context = {"crontab": crontab, "crontab_text": describe_crontab(crontab) if crontab else ""}
        return render(request, "campaigns/_crontab.html", context)


class ReviewView(ComposerView):
    step = "review"

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        return self.page("campaigns/step_review.html", campaign, self.review_context(campaign))

    def review_context(self, campaign: Campaign) -> dict[str, Any]:
        problems = [
            {
                "field": p.field,
                "message": p.message,
                "url": self.url("variant_edit", campaign, variant_id=p.variant_id)
                if p.variant_id
                else self.url(_step_of(p.field), campaign),
            }
            for p in services.campaign_problems(campaign=campaign)
        ]
        audience = list(
            CampaignAudience.objects.filter(tenant=self.tenant, campaign=campaign).select_related("segment")
        )
        variants = list(
            Variant.objects.filter(tenant=self.tenant, campaign=campaign)
            .select_related("target_segment")
            .order_by("position", "id")
        )
        included = [a.segment for a in audience if not a.exclude]
        return {
            "problems": problems,
            "included": included,
            "excluded": [a.segment for a in audience if a.exclude],
            "variants": variants,
            "schedule_text": schedule_text(campaign),
            "sender_rows": [
                (str(getattr(Campaign._meta.get_field(name), "verbose_name", name)), getattr(campaign, name))
                for name in SENDER_FIELDS.get(campaign.channel, ())
            ],
            "estimate": services.audience_estimate(campaign=campaign) if included else None,
            "nobody": not included,
        }


def _step_of(field: str) -> str:
    head = field.split(".")[0].split("[")[0]
    if head in FIELD_STEPS:
        return FIELD_STEPS[head]
    return "content"  # variants, templates, sender, webhook address


class SendView(ComposerView):
    """The review's button: send now, or schedule as the schedule step says ("now=1": send now regardless)."""

    http_method_names = ["post"]
    step = "review"

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.editable(campaign_id)
        actor = self.actor()
        try:
            if campaign.schedule == Campaign.Schedule.NOW or request.POST.get("now") == "1":
                services.campaign_send_now(campaign=campaign, actor=actor)
                messages.success(request, "Sending started.")
            else:
                services.campaign_schedule(campaign=campaign, actor=actor)
                messages.success(request, f"Scheduled: {schedule_text(campaign)}.")
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
            return redirect(self.url("review", campaign))
        return redirect(self.url("detail", campaign))


# --- the campaign page ---------------------------------------------------------------------------
def schedule_text(campaign: Campaign) -> str:
    """The schedule in words, in the tenant's time zone."""
    zone = scheduling.tenant_zone(campaign.tenant)
    zone_name = zone.key
    if campaign.schedule == Campaign.Schedule.AT and campaign.send_at:
        when = timezone.localtime(campaign.send_at, zone)
        return f"at {when:%Y-%m-%d %H:%M} ({zone_name})"
    if campaign.schedule == Campaign.Schedule.RECURRING and campaign.crontab:
        words = describe_crontab(campaign.crontab)
        return f"recurring: {words[0].lower() + words[1:] if words else campaign.crontab} ({zone_name})"
    if campaign.schedule == Campaign.Schedule.LOCAL_TIME and campaign.local_time:
        return f"at {campaign.local_time:%H:%M} in each recipient's time zone"
    return "now, when you send it"


def next_run_at(campaign: Campaign) -> dt.datetime | None:
    """When django-celery-beat starts the campaign next (None when nothing is planned)."""
    task = campaign.periodic_task
    if task is None or not task.enabled:
        return None
    if task.clocked_id and task.clocked is not None:
        return task.clocked.clocked_time
    if task.crontab_id:
        # The crontab's next match in the tenant's zone, computed as beat does (both day fields must match).
        return scheduling.next_occurrence(campaign)
    return None


class CampaignDetailView(CampaignsView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        runs = list(CampaignRun.objects.filter(tenant=self.tenant, campaign=campaign).order_by("-number")[:20])
        context: dict[str, Any] = {
            "campaign": campaign,
            "runs": runs,
            # Once a one-off campaign has gone out, its plan is history: the runs say when it went.
            "schedule_text": schedule_text(campaign)
            if campaign.status in PLANNED or campaign.schedule == Campaign.Schedule.RECURRING
            else "",
            "next_run": next_run_at(campaign) if campaign.periodic_task_id else None,
            "editable": campaign.status in EDITABLE,
            "can_pause": campaign.status in (Campaign.Status.SENDING, Campaign.Status.SCHEDULED),
            "can_resume": campaign.status == Campaign.Status.PAUSED,
            "can_cancel": campaign.status
            in (Campaign.Status.SCHEDULED, Campaign.Status.SENDING, Campaign.Status.PAUSED),
        }
        if runs:
            context.update(run_context(self, campaign, runs[0], DeliveryFilterForm({})))
        return render(request, "campaigns/campaign_detail.html", context)


class CampaignActionView(CampaignsView):
    """Pause, resume or cancel through the services; a wrong state is a message, not an error page."""

    http_method_names = ["post"]
    action = ""
    done = ""

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        service = getattr(services, f"campaign_{self.action}")
        try:
            service(campaign=campaign, actor=self.actor())
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
        else:
            messages.success(request, self.done)
        return redirect(self.url("detail", campaign))


class CampaignPauseView(CampaignActionView):
    action, done = "pause", "Paused: sending stops after the batch in flight."


class CampaignResumeView(CampaignActionView):
    action, done = "resume", "Resumed."


class CampaignCancelView(CampaignActionView):
    action, done = "cancel", "Cancelled: nothing more is sent."


def run_context(view: CampaignsView, campaign: Campaign, run: CampaignRun, form: DeliveryFilterForm) -> dict[str, Any]:
    """The progress and one page of the delivery log of a run."""
    deliveries, next_after = [], None
    if form.is_valid():
        data = form.cleaned_data
        rows = selectors.delivery_list(run=run, status=data["status"] or None, skip_reason=data["skip_reason"] or None)
        if data["after"]:
            rows = rows.filter(id__gt=data["after"])
        # Keyset pagination in id order: no OFFSET and no COUNT, so page 20,000 costs what page 1 costs.
        deliveries = list(rows[: DELIVERY_PAGE_SIZE + 1])
        if len(deliveries) > DELIVERY_PAGE_SIZE:
            deliveries = deliveries[:DELIVERY_PAGE_SIZE]
            next_after = deliveries[-1].pk
    log_url = view.url("run", campaign, run_id=run.pk)
    query = {k: v for k, v in (form.data.items() if form.is_bound else []) if k in ("status", "skip_reason") and v}
    return {
        "run": run,
        "progress": progress_of(run),
        "log_form": form,
        "deliveries": deliveries,
        "log_url": log_url,
        "progress_url": view.url("run_progress", campaign, run_id=run.pk),
        "next_url": f"{log_url}?{urlencode({**query, 'after': next_after})}" if next_after else None,
        "first_url": f"{log_url}?{urlencode(query)}" if query else log_url,
        "log_continued": bool(form.is_valid() and form.cleaned_data["after"]),
        "contacts_url": reverse("contacts:list", kwargs={"tenant_slug": view.tenant.slug}),
    }


@dataclass(frozen=True)
class Progress:
    total: int
    sent: int
    skipped: int
    failed: int
    pending: int
    live: bool

    @property
    def done(self) -> int:
        return self.sent + self.skipped + self.failed

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, self.done * 100 // self.total)


def progress_of(run: CampaignRun) -> Progress:
    counts = run_progress(run)
    sent, skipped, failed = counts.get("sent", 0), counts.get("skipped", 0), counts.get("failed", 0)
    pending = counts.get("pending", 0) + counts.get("sending", 0)
    total = max(run.audience_size, sent + skipped + failed + pending)
    return Progress(total, sent, skipped, failed, pending, live=run.status in ACTIVE_RUN and pending > 0)


class RunDetailView(CampaignsView):
    """One run: its progress and the delivery log (filtered, keyset-paged); htmx swaps the log only."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int, run_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        run = self.run(campaign, run_id)
        form = DeliveryFilterForm(request.GET)
        context = {"campaign": campaign, **run_context(self, campaign, run, form)}
        status = 200 if form.is_valid() else 400
        partial = _is_partial(request, "delivery-log")
        template = "campaigns/_delivery_log.html" if partial else "campaigns/run_detail.html"
        response = render(request, template, context, status=status)
        patch_vary_headers(response, ["HX-Request", "HX-Target"])
        return response


class RunProgressView(CampaignsView):
    """The progress fragment, polled every 2 s while the run sends."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int, run_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        run = self.run(campaign, run_id)
        progress = progress_of(run)
        context = {
            "campaign": campaign,
            "run": run,
            "progress": progress,
            "progress_url": self.url("run_progress", campaign, run_id=run.pk),
        }
        response = render(request, "campaigns/_progress.html", context)
        response["Cache-Control"] = "no-store"
        if not progress.live and getattr(request, "htmx", False):
            # The poll that sees the run settle tells the page, which reloads its status and log.
            response["HX-Trigger"] = "run-settled"
        return response


# --- the composer's saves go through the campaign services -----------------------------------------
VARIANT_FIELDS = (
    "name", "target", "target_segment_id", "target_stage", "weight", "subject", "preheader", "html_body", "text_body",
    "sms_body", "push_title", "push_body", "push_deep_link", "webhook_payload", "cta_label", "cta_url",
)  # fmt: skip


def variants_of(campaign: Campaign) -> list[dict[str, Any]]:
    """The campaign's variants in their order, as the service takes them (with their ids, to keep them)."""
    rows = Variant.objects.filter(tenant=campaign.tenant, campaign=campaign).order_by("position", "id")
    return [{"id": row["id"], **{k: row[k] for k in VARIANT_FIELDS}} for row in rows.values("id", *VARIANT_FIELDS)]


def default_last(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The default variants catch everyone the others did not: they go after all targeted ones."""
    targeted = [v for v in variants if v["target"] != Variant.Target.DEFAULT]
    return targeted + [v for v in variants if v["target"] == Variant.Target.DEFAULT]


def _form_field(path: str, variant_index: int | None) -> str | None:
    """The form field a service error path names (``audience.include``, ``variants[2].subject``), if any."""
    if path.startswith("audience."):
        return path.removeprefix("audience.")
    if path.startswith("variants["):
        index, _, field = path.removeprefix("variants[").partition("].")
        if variant_index is not None and index == str(variant_index):
            return field.removesuffix("_id")
        return None
    return path
