"""The personalisation pages: slots with their figures, a slot's variants in priority order, preview as any
contact, and the site keys with the snippet to paste.

Every write goes through personalization/services.py; the preview asks the decision function the
snippet's ``/p/v1/decide/`` uses (personalization/decisions.py), so it shows what a visitor would get.
Members of every role may read; marketers and up edit slots; admins and owners manage site keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import reverse

from analytics.selectors import PERIODS
from analytics.views import csv_response
from contacts.models import Contact, LifecycleStage
from contacts.selectors import ContactFilters, contacts_matching
from personalization import services
from personalization.decisions import Decision, contact_facts, decide_for_contact, load_tenant_slots
from personalization.figures import FigurePeriod, SlotReport, slot_report, slot_reports
from personalization.forms import (
    FigurePeriodForm,
    PreviewForm,
    SiteKeyEditForm,
    SiteKeyForm,
    SlotForm,
    VariantForm,
)
from personalization.models import SiteKey, Slot, SlotVariant
from segments.models import Segment
from tenants.audit import Actor
from tenants.roles import Permission
from tenants.web import TenantView, add_service_errors

PREVIEW_MATCHES = 10
# The new identify secret waits in the session for exactly one page view (post/redirect/get), so a
# reload shows it no more.
NEW_SECRET_SESSION = "new_site_key_secret"  # noqa: S105 - a session key name, not a secret


def period_query(period: FigurePeriod) -> str:
    return f"start={period.start.isoformat()}&end={period.end.isoformat()}"


def target_text(variant: SlotVariant) -> str:
    """Whom a variant is for, in words (its segment must be loaded with it)."""
    if variant.target == SlotVariant.Target.STAGE:
        label = LifecycleStage(variant.target_stage).label if variant.target_stage in LifecycleStage.values else "?"
        return f"Lifecycle stage: {label}"
    segment = variant.target_segment
    return f"Segment: {segment.name}" if segment is not None else "Segment: (deleted)"


def snippet_for(request: HttpRequest, site_key: SiteKey) -> str:
    """The lines a tenant pastes into its pages: the script from this server, with the key filled in."""
    script = request.build_absolute_uri(static("js/segmentor.js"))
    endpoint = request.build_absolute_uri(reverse("personalization_public:decide").removesuffix("decide/"))
    return (
        f'<script src="{script}" defer\n'
        f'        data-segmentor-key="{site_key.public_key}" data-segmentor-endpoint="{endpoint}"></script>\n'
        "<!-- When the visitor agrees, your consent banner calls: segmentor.consent(true)\n"
        '     When your server knows who it is: segmentor.identify({external_id: "…", signature: "…"}) -->\n'
        '<div data-segmentor-slot="hero">Your own content: shown until consent, and when no variant fits.</div>'
    )


# --- base --------------------------------------------------------------------------------------
class PersonalizationView(TenantView):
    """Base: the acting person, and the slot, variant or site key named in the URL (another tenant's: 404)."""

    def actor(self) -> Actor:
        return Actor.for_user(self.membership.user)

    def url(self, name: str, **kwargs: Any) -> str:
        return reverse(f"personalization:{name}", kwargs={"tenant_slug": self.tenant.slug, **kwargs})

    def slot(self, slot_id: int) -> Slot:
        slot = get_object_or_404(Slot.objects.filter(tenant=self.tenant), pk=slot_id)
        slot.tenant = self.tenant  # the same row, already loaded: spare the services a query
        return slot

    def variant(self, slot: Slot, slot_variant_id: int) -> SlotVariant:
        rows = SlotVariant.objects.filter(tenant=self.tenant, slot=slot).select_related("target_segment")
        variant = get_object_or_404(rows, pk=slot_variant_id)
        variant.slot = slot
        variant.tenant = self.tenant
        return variant

    def site_key(self, site_key_id: int) -> SiteKey:
        site_key = get_object_or_404(SiteKey.objects.filter(tenant=self.tenant), pk=site_key_id)
        site_key.tenant = self.tenant
        return site_key

    def errors_as_messages(self, error: ValidationError) -> None:
        for message in error.messages:
            messages.error(self.request, message)


# --- slots: list, figures, CSV -----------------------------------------------------------------------
def figure_lines(reports: Sequence[SlotReport]) -> tuple[list[str], list[list[Any]]]:
    header = [
        "slot_key", "slot_name", "variant_id", "variant", "target", "priority", "active", "impressions", "clicks",
        "ctr", "conversions", "conversions_per_click", "revenue",
    ]  # fmt: skip
    lines = []
    for report in reports:
        for row in report.rows:
            variant, f = row.variant, row.figures
            lines.append(
                [
                    report.slot.key, report.slot.name, variant.pk if variant else None, row.label,
                    target_text(variant) if variant else "everyone else", variant.priority + 1 if variant else None,
                    variant.active if variant else report.slot.active, f.impressions, f.clicks, f.ctr, f.conversions,
                    f.conversion_rate, f.revenue,
                ]
            )  # fmt: skip
    return header, lines


class SlotListView(PersonalizationView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = FigurePeriodForm(request.GET)
        period = form.figure_period()
        reports = slot_reports(tenant=self.tenant, period=period)
        context = {
            "form": form, "period": period, "period_query": period_query(period), "periods": PERIODS,
            "reports": reports, "site_key_count": SiteKey.objects.filter(tenant=self.tenant, revoked_at=None).count(),
        }  # fmt: skip
        return render(request, "personalization/slot_list.html", context, status=400 if form.errors else 200)


class FiguresCsvView(PersonalizationView):
    """Every slot's variants and default with their figures over the period; one slot's with ``slot_id``."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, slot_id: int | None = None) -> HttpResponse:
        period = FigurePeriodForm(request.GET).figure_period()
        if slot_id is None:
            reports, name = slot_reports(tenant=self.tenant, period=period), "slots"
        else:
            slot = self.slot(slot_id)
            reports, name = [slot_report(slot=slot, period=period)], f"slot-{slot.key}"
        header, lines = figure_lines(reports)
        return csv_response(f"{name}-{period.start}-{period.end}.csv", header, lines)


# --- a slot: create, its page, edit, delete ------------------------------------------------------------
class SlotCreateView(PersonalizationView):
    def render_form(self, form: SlotForm, status: int = 200) -> HttpResponse:
        context = {"form": form, "slot": None, "can_edit": self.can(Permission.EDIT_CONTENT)}
        return render(self.request, "personalization/slot_form.html", context, status=status)

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.render_form(SlotForm())

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = SlotForm(request.POST)
        if not form.is_valid():
            return self.render_form(form, status=400)
        try:
            slot = services.slot_create(tenant=self.tenant, actor=self.actor(), data=form.data_for_service())
        except ValidationError as error:
            add_service_errors(form, error)
            return self.render_form(form, status=400)
        messages.success(request, f"Slot “{slot}” created. Add a variant for a segment or a lifecycle stage.")
        return redirect(self.url("slot", slot_id=slot.pk))


class SlotDetailView(PersonalizationView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, slot_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        form = FigurePeriodForm(request.GET)
        period = form.figure_period()
        report = slot_report(slot=slot, period=period)
        variants = [row for row in report.rows if row.variant is not None]
        context = {
            "slot": slot, "report": report, "default": report.rows[-1],
            "variants": [{"row": row, "target": target_text(row.variant)} for row in variants if row.variant],
            "form": form, "period": period, "period_query": period_query(period), "periods": PERIODS,
            "can_edit": self.can(Permission.EDIT_CONTENT),
        }  # fmt: skip
        return render(request, "personalization/slot_detail.html", context, status=400 if form.errors else 200)


class SlotEditView(PersonalizationView):
    def render_form(self, slot: Slot, form: SlotForm, status: int = 200) -> HttpResponse:
        context = {"form": form, "slot": slot, "can_edit": self.can(Permission.EDIT_CONTENT)}
        return render(self.request, "personalization/slot_form.html", context, status=status)

    def get(self, request: HttpRequest, tenant_slug: str, slot_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        return self.render_form(slot, SlotForm(initial=SlotForm.initial_for(slot)))

    def post(self, request: HttpRequest, tenant_slug: str, slot_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        form = SlotForm(request.POST)
        if not form.is_valid():
            return self.render_form(slot, form, status=400)
        try:
            services.slot_update(slot=slot, actor=self.actor(), data=form.data_for_service())
        except ValidationError as error:
            add_service_errors(form, error)
            return self.render_form(slot, form, status=400)
        messages.success(request, "Slot saved.")
        return redirect(self.url("slot", slot_id=slot.pk))


class SlotDeleteView(PersonalizationView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, slot_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        name = str(slot)
        services.slot_delete(slot=slot, actor=self.actor())
        messages.success(request, f"Slot “{name}” deleted: the page shows its own content there again.")
        return redirect(self.url("slots"))


# --- variants -------------------------------------------------------------------------------------------
class VariantPage(PersonalizationView):
    def render_form(
        self, slot: Slot, form: VariantForm, variant: SlotVariant | None = None, status: int = 200
    ) -> HttpResponse:
        context = {
            "slot": slot, "form": form, "variant": variant, "can_edit": self.can(Permission.EDIT_CONTENT),
            "has_segments": Segment.objects.filter(tenant=self.tenant).exists(),
        }  # fmt: skip
        return render(self.request, "personalization/variant_form.html", context, status=status)


class VariantCreateView(VariantPage):
    def get(self, request: HttpRequest, tenant_slug: str, slot_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        return self.render_form(slot, VariantForm(tenant=self.tenant))

    def post(self, request: HttpRequest, tenant_slug: str, slot_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        form = VariantForm(request.POST, tenant=self.tenant)
        if not form.is_valid():
            return self.render_form(slot, form, status=400)
        try:
            variant = services.variant_add(slot=slot, actor=self.actor(), data=form.data_for_service())
        except ValidationError as error:
            add_service_errors(form, error)
            return self.render_form(slot, form, status=400)
        messages.success(request, f"Variant “{variant}” added (tried after the ones above it).")
        return redirect(self.url("slot", slot_id=slot.pk))


class VariantEditView(VariantPage):
    def get(self, request: HttpRequest, tenant_slug: str, slot_id: int, slot_variant_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        variant = self.variant(slot, slot_variant_id)
        return self.render_form(
            slot, VariantForm(tenant=self.tenant, initial=VariantForm.initial_for(variant)), variant
        )

    def post(self, request: HttpRequest, tenant_slug: str, slot_id: int, slot_variant_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        variant = self.variant(slot, slot_variant_id)
        form = VariantForm(request.POST, tenant=self.tenant)
        if not form.is_valid():
            return self.render_form(slot, form, variant, status=400)
        try:
            services.variant_update(variant=variant, actor=self.actor(), data=form.data_for_service())
        except ValidationError as error:
            add_service_errors(form, error)
            return self.render_form(slot, form, variant, status=400)
        messages.success(request, f"Variant “{form.cleaned_data['name']}” saved.")
        return redirect(self.url("slot", slot_id=slot.pk))


class VariantMoveView(PersonalizationView):
    """Up: tried one place earlier; down: one place later."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, slot_id: int, slot_variant_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        variant = self.variant(slot, slot_variant_id)
        direction = request.POST.get("direction")
        order = list(
            SlotVariant.objects.filter(tenant=self.tenant, slot=slot)
            .order_by("priority", "id")
            .values_list("pk", flat=True)
        )
        place = order.index(variant.pk)
        target = place - 1 if direction == "up" else place + 1 if direction == "down" else None
        if target is None or not 0 <= target < len(order):
            messages.error(request, f"“{variant}” cannot move {direction if direction in ('up', 'down') else 'so'}.")
        else:
            try:
                services.variant_move(variant=variant, position=target, actor=self.actor())
            except ValidationError as error:
                self.errors_as_messages(error)
        return redirect(self.url("slot", slot_id=slot.pk) + f"#variant-{variant.pk}")


class VariantActiveView(PersonalizationView):
    """Activate (``active=1``) or deactivate (``active=0``) a variant; an inactive one keeps its figures."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, slot_id: int, slot_variant_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        variant = self.variant(slot, slot_variant_id)
        active = request.POST.get("active")
        if active not in ("0", "1"):
            messages.error(request, "Choose whether the variant is active.")
        else:
            try:
                services.variant_update(variant=variant, actor=self.actor(), data={"active": active == "1"})
            except ValidationError as error:
                self.errors_as_messages(error)
            else:
                state = "active: visitors it fits see it" if active == "1" else "inactive: nobody sees it"
                messages.success(request, f"“{variant}” is {state}.")
        return redirect(self.url("slot", slot_id=slot.pk) + f"#variant-{variant.pk}")


class VariantDeleteView(PersonalizationView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, slot_id: int, slot_variant_id: int) -> HttpResponse:
        slot = self.slot(slot_id)
        variant = self.variant(slot, slot_variant_id)
        name = str(variant)
        services.variant_delete(variant=variant, actor=self.actor())
        messages.success(request, f"Variant “{name}” deleted, with its figures.")
        return redirect(self.url("slot", slot_id=slot.pk))


# --- preview as a contact ---------------------------------------------------------------------------------
class PreviewView(PersonalizationView):
    """Find a contact, then see what each slot would show them and why (the snippet's own decision)."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = PreviewForm(request.GET)
        context: dict[str, Any] = {"form": form, "matches": [], "contact": None, "rows": []}
        status = 200
        if not form.is_valid():
            return render(request, "personalization/preview.html", context, status=400)
        contacts = Contact.objects.filter(tenant=self.tenant, erased_at__isnull=True)
        q = form.cleaned_data["q"].strip()
        if q:
            # The contact list's own search (email, phone or external id, last name: prefixes on indexes).
            found = contacts_matching(tenant=self.tenant, filters=ContactFilters(q=q)).filter(erased_at__isnull=True)
            context["matches"] = list(found.order_by("pk")[:PREVIEW_MATCHES])
            context["searched"] = True
        chosen = form.cleaned_data["contact"]
        if chosen is not None:
            contact = contacts.filter(pk=chosen).first()
            if contact is None:
                form.add_error("contact", "No such contact in this workspace.")
                context["contact_error"] = "No such contact in this workspace."
                status = 400
            else:
                context.update(self.preview(contact))
        return render(request, "personalization/preview.html", context, status=status)

    def preview(self, contact: Contact) -> dict[str, Any]:
        slots = list(Slot.objects.filter(tenant=self.tenant).order_by("key"))
        decisions: dict[int, Decision] = {
            d.slot_id: d
            for d in decide_for_contact(
                tenant_id=self.tenant.pk, contact_id=contact.pk, slot_keys=[s.key for s in slots if s.active]
            )
        }
        _stage, segment_ids = contact_facts(self.tenant.pk, contact.pk, load_tenant_slots(self.tenant.pk))
        chosen_ids = [d.variant_id for d in decisions.values() if d.variant_id is not None]
        variants = {
            v.pk: v
            for v in SlotVariant.objects.filter(tenant=self.tenant, pk__in=chosen_ids).select_related("target_segment")
        }
        rows = []
        for slot in slots:
            decision = decisions.get(slot.pk)
            variant = variants.get(decision.variant_id) if decision and decision.variant_id else None
            if decision is None:
                why = "The slot is inactive: the page keeps its own content."
            elif variant is None:
                why = "No active variant fits this contact: the default content."
            elif variant.target == SlotVariant.Target.STAGE:
                why = f"The contact's lifecycle stage is {variant.get_target_stage_display()}."
            else:
                segment = variant.target_segment
                why = f"The contact is a member of the segment “{segment.name if segment else '?'}”."
            rows.append({"slot": slot, "decision": decision, "variant": variant, "why": why})
        names = dict(Segment.objects.filter(tenant=self.tenant, pk__in=sorted(segment_ids)).values_list("pk", "name"))
        return {"contact": contact, "rows": rows, "memberships": sorted(names.values())}


# --- site keys --------------------------------------------------------------------------------------------
class SiteKeyPage(PersonalizationView):
    """Members read site keys (the public key sits in the tenant's pages anyway); admins and owners change them."""

    write_permission = Permission.MANAGE_TENANT

    def keep_secret(self, site_key: SiteKey) -> None:
        self.request.session[NEW_SECRET_SESSION] = {
            "tenant_id": self.tenant.pk, "site_key_id": site_key.pk, "secret": site_key.identify_secret,
        }  # fmt: skip


class SiteKeysView(SiteKeyPage):
    """The workspace's site keys; admins create one (its identify secret is shown once, on its page)."""

    def render_list(self, form: SiteKeyForm, status: int = 200) -> HttpResponse:
        context = {
            "site_keys": SiteKey.objects.filter(tenant=self.tenant).select_related("created_by"),
            "form": form,
            "can_manage": self.can(Permission.MANAGE_TENANT),
        }
        return render(self.request, "personalization/site_keys.html", context, status=status)

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.render_list(SiteKeyForm())

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = SiteKeyForm(request.POST)
        if not form.is_valid():
            return self.render_list(form, status=400)
        try:
            site_key = services.site_key_create(
                tenant=self.tenant, name=form.cleaned_data["name"], allowed_origins=form.origins(), actor=self.actor(),
                require_signed_identify=form.cleaned_data["require_signed_identify"],
            )  # fmt: skip
        except ValidationError as error:
            add_service_errors(form, error)
            return self.render_list(form, status=400)
        self.keep_secret(site_key)
        messages.success(request, f"Site key “{site_key.name}” created. Paste the snippet into your pages.")
        return redirect(self.url("site_key", site_key_id=site_key.pk))


class SiteKeyDetailView(SiteKeyPage):
    """A key: the snippet with its public key, its origins (editable), signed identify, and a new secret once."""

    def render_key(self, site_key: SiteKey, form: SiteKeyEditForm, status: int = 200) -> HttpResponse:
        secret = ""
        pending = self.request.session.pop(NEW_SECRET_SESSION, None)
        if pending and pending.get("tenant_id") == self.tenant.pk and pending.get("site_key_id") == site_key.pk:
            secret = pending["secret"]
        context = {
            "site_key": site_key, "form": form, "secret": secret, "snippet": snippet_for(self.request, site_key),
            "can_manage": self.can(Permission.MANAGE_TENANT),
        }  # fmt: skip
        response = render(self.request, "personalization/site_key_detail.html", context, status=status)
        response["Cache-Control"] = "no-store"
        return response

    def get(self, request: HttpRequest, tenant_slug: str, site_key_id: int) -> HttpResponse:
        site_key = self.site_key(site_key_id)
        initial = {"name": site_key.name, "allowed_origins": site_key.allowed_origins}
        return self.render_key(site_key, SiteKeyEditForm(initial=initial))

    def post(self, request: HttpRequest, tenant_slug: str, site_key_id: int) -> HttpResponse:
        site_key = self.site_key(site_key_id)
        form = SiteKeyEditForm(request.POST)
        if not form.is_valid():
            return self.render_key(site_key, form, status=400)
        try:
            services.site_key_update(
                site_key=site_key, actor=self.actor(), name=form.cleaned_data["name"], allowed_origins=form.origins()
            )
        except ValidationError as error:
            add_service_errors(form, error)
            return self.render_key(site_key, form, status=400)
        messages.success(request, "Site key saved: the new origins apply from the next request.")
        return redirect(self.url("site_key", site_key_id=site_key.pk))


class SiteKeyActionView(SiteKeyPage):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, site_key_id: int) -> HttpResponse:
        site_key = self.site_key(site_key_id)
        if site_key.revoked_at is not None:
            messages.error(request, "This key is revoked: create a new one.")
        else:
            try:
                self.act(site_key)
            except ValidationError as error:
                self.errors_as_messages(error)
        return redirect(self.url("site_key", site_key_id=site_key.pk))

    def act(self, site_key: SiteKey) -> None:
        raise NotImplementedError


class SiteKeyRevokeView(SiteKeyActionView):
    def act(self, site_key: SiteKey) -> None:
        services.site_key_revoke(site_key=site_key, actor=self.actor())
        messages.success(self.request, f"Site key “{site_key.name}” revoked: the snippet with it stops at once.")


class SiteKeySignedIdentifyView(SiteKeyActionView):
    """Turn "require signed identify" on (``require=1``) or off (``require=0``)."""

    def act(self, site_key: SiteKey) -> None:
        require = self.request.POST.get("require")
        if require not in ("0", "1"):
            raise ValidationError("Choose whether identify must be signed.")
        services.site_key_update(site_key=site_key, actor=self.actor(), require_signed_identify=require == "1")
        if require == "1":
            messages.success(self.request, "Identify calls must now carry your server's signature.")
        else:
            messages.warning(
                self.request,
                "Identify no longer needs a signature: anyone on your pages can claim to be any of your users.",
            )


class SiteKeyRotateView(SiteKeyActionView):
    """A new identify secret (shown once); signatures made with the old one stop working."""

    def act(self, site_key: SiteKey) -> None:
        rotated = services.site_key_rotate_identify_secret(site_key=site_key, actor=self.actor())
        self.keep_secret(rotated)
        messages.success(self.request, "New identify secret: sign with it from now on (the old one no longer works).")
