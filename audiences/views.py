"""The audience pages: destinations and exports, a destination's form, downloads, the lookalike seed's page."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from audiences import selectors, services
from audiences.forms import DestinationForm, DownloadForm, SegmentChoiceForm
from audiences.models import AudienceDestination, AudienceExport, ExportKind
from segments.models import Segment
from tenants.audit import Actor
from tenants.roles import Permission
from tenants.web import TenantView, add_service_errors

EXPORTS_SHOWN = 50


def download_response(stream: services.DownloadStream, export: AudienceExport) -> StreamingHttpResponse:
    """The file as an attachment, streamed; the export's id in a header (the API's too)."""
    response = StreamingHttpResponse(stream, content_type="text/csv; charset=utf-8")
    name = f"audience-{export.format}-segment-{export.segment_id}-{timezone.now():%Y%m%d-%H%M}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    response["X-Segmentor-Export"] = str(export.pk)
    return response


class AudiencesView(TenantView):
    """Base for the audience pages: the acting person, the objects in the URL, the app's URLs."""

    def actor(self) -> Actor:
        return Actor.for_user(self.membership.user)

    def destination(self, destination_id: int) -> AudienceDestination:
        destinations = AudienceDestination.objects.filter(tenant=self.tenant).select_related("segment", "periodic_task")
        destination = get_object_or_404(destinations, pk=destination_id)
        destination.tenant = self.tenant
        return destination

    def segment(self, segment_id: int) -> Segment:
        segment = self.get_tenant_object(Segment, segment_id)
        segment.tenant = self.tenant
        return segment

    def url(self, name: str, **kwargs: Any) -> str:
        return reverse(f"audiences:{name}", kwargs={"tenant_slug": self.tenant.slug, **kwargs})


class AudienceHomeView(AudiencesView):
    """Destinations, recent exports, and the forms to download a segment or open its lookalike summary."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        choice = SegmentChoiceForm(request.GET or None, tenant=self.tenant)
        go = request.GET.get("go")
        if request.GET and choice.is_valid():
            segment = choice.cleaned_data["segment"]
            if go == "lookalike":
                return redirect(self.url("lookalike", segment_id=segment.pk))
            fmt = choice.cleaned_data.get("format") or "google"
            return redirect(f"{self.url('download', segment_id=segment.pk)}?format={fmt}")
        destinations = list(selectors.destinations_for(self.tenant))
        context = {
            "destinations": [{"destination": d, "next_run": services.next_run(d)} for d in destinations],
            "exports": list(selectors.exports_for(self.tenant)[:EXPORTS_SHOWN]),
            "choice": choice,
            "has_purpose": selectors.has_advertising_purpose(self.tenant),
            "purpose": selectors.ADVERTISING_PURPOSE,
            "reasons": selectors.EXCLUSION_REASONS,
        }
        status = 400 if request.GET and not choice.is_valid() else 200
        return render(request, "audiences/home.html", context, status=status)


class DestinationFormView(AudiencesView):
    read_permission = Permission.MANAGE_TENANT  # where hashed customer data goes is an admin's decision
    write_permission = Permission.MANAGE_TENANT

    def render_form(
        self, form: DestinationForm, destination: AudienceDestination | None, status: int = 200
    ) -> HttpResponse:
        exports = (
            list(selectors.exports_for(self.tenant, destination_id=destination.pk)[:EXPORTS_SHOWN])
            if destination
            else []
        )
        context = {
            "form": form,
            "destination": destination,
            "exports": exports,
            "next_run": services.next_run(destination) if destination else None,
            "reasons": selectors.EXCLUSION_REASONS,
        }
        return render(self.request, "audiences/destination_form.html", context, status=status)


class DestinationCreateView(DestinationFormView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        initial = {"schedule": AudienceDestination.Schedule.INTERVAL, "interval_minutes": 1440, "enabled": True}
        if segment_id := request.GET.get("segment", ""):
            initial["segment"] = segment_id if segment_id.isdigit() else None
        return self.render_form(DestinationForm(initial=initial, tenant=self.tenant), None)

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = DestinationForm(request.POST, tenant=self.tenant)
        if form.is_valid():
            try:
                destination = services.destination_create(
                    tenant=self.tenant, actor=self.actor(), data=form.service_data()
                )
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(request, f"Destination “{destination.name}” saved.")
                return redirect(self.url("destination_edit", destination_id=destination.pk))
        return self.render_form(form, None, status=400)


class DestinationEditView(DestinationFormView):
    def get(self, request: HttpRequest, tenant_slug: str, destination_id: int) -> HttpResponse:
        destination = self.destination(destination_id)
        form = DestinationForm(initial=DestinationForm.initial_for(destination), tenant=self.tenant, editing=True)
        return self.render_form(form, destination)

    def post(self, request: HttpRequest, tenant_slug: str, destination_id: int) -> HttpResponse:
        destination = self.destination(destination_id)
        form = DestinationForm(request.POST, tenant=self.tenant, editing=True)
        if form.is_valid():
            try:
                services.destination_update(destination=destination, actor=self.actor(), data=form.service_data())
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(request, "Destination saved.")
                return redirect(self.url("destination_edit", destination_id=destination.pk))
        return self.render_form(form, destination, status=400)


class DestinationRunView(AudiencesView):
    """Run now: queue an export to the destination."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, destination_id: int) -> HttpResponse:
        destination = self.destination(destination_id)
        try:
            export = services.destination_run_now(destination=destination, actor=self.actor())
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
            return redirect(self.url("destination_edit", destination_id=destination.pk))
        messages.success(request, f"Export #{export.pk} queued: a worker builds and pushes the file.")
        return redirect(self.url("export_detail", export_id=export.pk))


class DestinationDeleteView(AudiencesView):
    http_method_names = ["post"]
    write_permission = Permission.MANAGE_TENANT

    def post(self, request: HttpRequest, tenant_slug: str, destination_id: int) -> HttpResponse:
        destination = self.destination(destination_id)
        name = destination.name
        services.destination_delete(destination=destination, actor=self.actor())
        messages.success(request, f"Destination “{name}” deleted; its exports stay on record.")
        return redirect(self.url("home"))


class ExportDetailView(AudiencesView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, export_id: int) -> HttpResponse:
        export = get_object_or_404(
            AudienceExport.objects.filter(tenant=self.tenant).select_related("destination", "segment"), pk=export_id
        )
        excluded = [(label, (export.excluded or {}).get(key, 0)) for key, label in selectors.EXCLUSION_REASONS.items()]
        context = {"export": export, "excluded": excluded}
        return render(request, "audiences/export_detail.html", context)


class DownloadView(AudiencesView):
    """The segment's audience file, streamed (recorded as an export)."""

    read_permission = Permission.EXPORT
    http_method_names = ["get"]

    def get(self, request: HttpRequest, tenant_slug: str, segment_id: int) -> HttpResponseBase:
        segment = self.segment(segment_id)
        form = DownloadForm(request.GET)
        if not form.is_valid():
            errors = "; ".join(f"{name}: {' '.join(str(m) for m in e)}" for name, e in form.errors.items())
            return HttpResponse(f"Bad request: {errors}", status=400, content_type="text/plain; charset=utf-8")
        export = services.export_start(
            segment=segment, format=form.cleaned_data["format"], kind=form.cleaned_data["kind"], actor=self.actor(),
            trigger=AudienceExport.Trigger.DOWNLOAD,
        )  # fmt: skip
        return download_response(services.download_stream(export=export), export)


class LookalikeView(AudiencesView):
    """The lookalike seed: the segment described against everyone, and its files."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, segment_id: int) -> HttpResponse:
        segment = self.segment(segment_id)
        summary = selectors.lookalike_summary(segment=segment)
        context = {
            "segment": segment,
            "summary": summary,
            "kind": ExportKind.LOOKALIKE_SEED,
            "exports": list(selectors.exports_for(self.tenant, segment_id=segment.pk)[:10]),
            "has_purpose": selectors.has_advertising_purpose(self.tenant),
            "purpose": selectors.ADVERTISING_PURPOSE,
        }
        return render(request, "audiences/lookalike.html", context)
