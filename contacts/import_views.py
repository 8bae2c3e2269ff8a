"""Pages of the CSV import (upload, map, preview, progress, report) and the contacts CSV export."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from contacts import importer
from contacts.export import contacts_export_csv
from contacts.fields import AttributeSchema
from contacts.models import Channel, ImportJob
from tenants.roles import Permission
from tenants.web import TenantView, add_service_errors

# Multipart framing and the CSRF field around the file: a request this much over the limit
# is refused from its Content-Length alone, before a byte of the body is read.
MULTIPART_OVERHEAD = 64 * 1024


# --- forms --------------------------------------------------------------------------------
class UploadForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        allow_empty_file=True,  # the importer says why an empty file cannot be imported
        widget=forms.FileInput(attrs={"accept": ".csv,.tsv,.txt,text/csv,text/plain,text/tab-separated-values"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = importer.max_upload_bytes()
        self.fields["file"].help_text = (
            f"Comma, semicolon or tab separated, with a header row; UTF-8 preferred; "
            f"at most {importer.describe_size(limit)}."
        )
        self.fields["file"].widget.attrs["data-max-bytes"] = str(limit)


class MappingForm(forms.Form):
    """One select per column of the file, plus how a consent column is recorded."""

    consent_channel = forms.ChoiceField(
        label="The consent column grants consent to", choices=[("", "—"), *Channel.choices], required=False
    )
    consent_purpose = forms.ChoiceField(label="for the purpose", required=False)
    consent_wording = forms.CharField(
        label="Wording the people agreed to",
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept with each consent record as evidence (source: import, legal basis: consent).",
    )

    def __init__(self, *args: Any, job: ImportJob, choices: list[tuple[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers: list[str] = list(job.headers)
        purposes = job.tenant.consent_purposes
        purpose = self.fields["consent_purpose"]
        assert isinstance(purpose, forms.ChoiceField)
        purpose.choices = [("", "—"), *((p, p.replace("_", " ").capitalize()) for p in purposes)]
        for index, header in enumerate(self.headers):
            self.fields[self.column_name(index)] = forms.ChoiceField(label=header, choices=choices)

    @staticmethod
    def column_name(index: int) -> str:
        return f"column_{index}"

    def mapping(self) -> dict[str, str]:
        return {header: self.cleaned_data[self.column_name(i)] for i, header in enumerate(self.headers)}

    def columns(self, samples: dict[str, list[str]]) -> list[tuple[str, forms.BoundField, list[str]]]:
        return [(h, self[self.column_name(i)], samples.get(h, [])) for i, h in enumerate(self.headers)]


def _initial_mapping(proposal: importer.MappingProposal, headers: list[str]) -> dict[str, str]:
    initial = {MappingForm.column_name(i): proposal.mapping.get(h, importer.SKIP) for i, h in enumerate(headers)}
    initial.update(
        consent_channel=proposal.consent_channel,
        consent_purpose=proposal.consent_purpose,
        consent_wording=proposal.consent_wording,
    )
    return initial


# --- upload -------------------------------------------------------------------------------
class UploadSizeGuard(FileUploadHandler):
    """Stop reading an upload as soon as it passes the limit (a Content-Length can lie or be absent)."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.exceeded = False
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received = start + len(raw_data)
        if self.received > self.limit:
            self.exceeded = True
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


@csrf_protect
def _csrf_checked(request: HttpRequest, respond: Callable[[], HttpResponse]) -> HttpResponse:
    """Check the CSRF token only once the size guard is in place (the check parses the body)."""
    return respond()


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


# Exempt here, checked in post() by _csrf_checked: the middleware's check would read the
# whole body before the view could refuse a file by its size.
@method_decorator(csrf_exempt, name="dispatch")
class ImportListView(TenantView):
    """The imports of this workspace, and the upload form."""

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self._render(UploadForm())

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        limit = importer.max_upload_bytes()
        length = _content_length(request)
        if length > limit + MULTIPART_OVERHEAD:
            message = importer.too_large_message(length, limit, approximate=True)
            return self._render(UploadForm(), error=message, status=413)
        guard = UploadSizeGuard(request, limit)
        request.upload_handlers = [guard, *request.upload_handlers]
        return _csrf_checked(request, lambda: self._upload(guard, limit))

    def _upload(self, guard: UploadSizeGuard, limit: int) -> HttpResponse:
        request = self.request
        request.FILES  # noqa: B018 - parse the body now, through the size guard
        if guard.exceeded:
            return self._render(UploadForm(), error=importer.too_large_message(guard.received, limit), status=413)
        form = UploadForm(request.POST, request.FILES)
        if not form.is_valid():
            return self._render(form, status=400)
        try:
            job, layout = importer.import_upload(
                tenant=self.tenant, upload=form.cleaned_data["file"], acting=self.membership
            )
        except ValidationError as error:
            form.add_error("file", error)
            return self._render(form, status=400)
        for note in layout.notes:
            messages.warning(request, note)
        messages.success(
            request, f"Read {layout.total_rows:,} rows and {len(layout.headers)} columns from “{job.original_name}”."
        )
        return redirect("contacts:import_map", tenant_slug=self.tenant.slug, import_id=job.pk)

    def _render(self, form: UploadForm, error: str = "", status: int = 200) -> HttpResponse:
        context = {
            "form": form,
            "error": error,
            "imports": importer.imports_of(self.tenant),
            "can_edit": self.can(Permission.EDIT_CONTENT),
            "can_export": self.can(Permission.EXPORT),
        }
        return render(self.request, "contacts/import_list.html", context, status=status)


# --- mapping and preview --------------------------------------------------------------------
class ImportMapView(TenantView):
    read_permission = Permission.EDIT_CONTENT

    def get(self, request: HttpRequest, tenant_slug: str, import_id: int) -> HttpResponseBase:
        job = self.get_tenant_object(ImportJob, import_id)
        if job.status != ImportJob.Status.UPLOADED:
            return redirect("contacts:import_detail", tenant_slug=self.tenant.slug, import_id=job.pk)
        proposal = importer.import_mapping_initial(job=job)
        form = self._form(job, initial=_initial_mapping(proposal, job.headers))
        return self._render(job, form, proposal.remembered_from)

    def post(self, request: HttpRequest, tenant_slug: str, import_id: int) -> HttpResponseBase:
        job = self.get_tenant_object(ImportJob, import_id)
        form = self._form(job, data=request.POST)
        if form.is_valid():
            try:
                importer.import_set_mapping(
                    job=job,
                    mapping=form.mapping(),
                    consent_channel=form.cleaned_data["consent_channel"],
                    consent_purpose=form.cleaned_data["consent_purpose"],
                    consent_wording=form.cleaned_data["consent_wording"],
                    acting=self.membership,
                )
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                return redirect("contacts:import_preview", tenant_slug=self.tenant.slug, import_id=job.pk)
        return self._render(job, form, None, status=400)

    def _form(self, job: ImportJob, **kwargs: Any) -> MappingForm:
        return MappingForm(job=job, choices=importer.mapping_choices(AttributeSchema(self.tenant)), **kwargs)

    def _render(
        self, job: ImportJob, form: MappingForm, remembered_from: ImportJob | None, status: int = 200
    ) -> HttpResponse:
        context = {
            "job": job,
            "form": form,
            "columns": form.columns(importer.import_sample(job=job)),
            "remembered_from": remembered_from,
            "encoding_note": importer.ENCODING_NOTES.get(job.encoding, ""),
            "delimiter_name": importer.DELIMITER_NAMES.get(job.delimiter, repr(job.delimiter)),
        }
        return render(self.request, "contacts/import_map.html", context, status=status)


class ImportPreviewView(TenantView):
    # The preview runs the real upsert in a rolled-back savepoint: only editors see it.
    read_permission = Permission.EDIT_CONTENT

    def get(self, request: HttpRequest, tenant_slug: str, import_id: int) -> HttpResponse:
        job = self.get_tenant_object(ImportJob, import_id)
        context = {"job": job, "preview": importer.import_preview(job=job)}
        return render(request, "contacts/import_preview.html", context)

    def post(self, request: HttpRequest, tenant_slug: str, import_id: int) -> HttpResponse:
        job = self.get_tenant_object(ImportJob, import_id)
        try:
            importer.import_start(job=job, acting=self.membership)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        return redirect("contacts:import_detail", tenant_slug=self.tenant.slug, import_id=job.pk)


# --- progress and report ------------------------------------------------------------------
def _status_context(view: TenantView, job: ImportJob) -> dict[str, Any]:
    finished = job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED)
    return {
        "job": job,
        "polling": job.status in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING),
        "outcome": importer.import_outcome(job) if finished else {},
        "can_restart": view.can(Permission.EDIT_CONTENT) and importer.can_restart(job, timezone.now()),
        "can_edit": view.can(Permission.EDIT_CONTENT),
        "can_export": view.can(Permission.EXPORT),
    }


class ImportDetailView(TenantView):
    def get(self, request: HttpRequest, tenant_slug: str, import_id: int) -> HttpResponse:
        job = self.get_tenant_object(ImportJob, import_id)
        return render(request, "contacts/import_detail.html", _status_context(self, job))


class ImportProgressView(TenantView):
    """The progress bar (polled by htmx every second while the job runs), then the report."""

    def get(self, request: HttpRequest, tenant_slug: str, import_id: int) -> HttpResponse:
        job = self.get_tenant_object(ImportJob, import_id)
        response = render(request, "contacts/import_status.html", _status_context(self, job))
        response["Cache-Control"] = "no-store"
        return response


class ImportRestartView(TenantView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, import_id: int) -> HttpResponse:
        job = self.get_tenant_object(ImportJob, import_id)
        try:
            importer.import_restart(job=job, acting=self.membership)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, "The import runs again from the start.")
        return redirect("contacts:import_detail", tenant_slug=self.tenant.slug, import_id=job.pk)


class ImportRejectedRowsView(TenantView):
    """The rejected rows with their reasons, as CSV (personal data: needs the export permission)."""

    read_permission = Permission.EXPORT

    def get(self, request: HttpRequest, tenant_slug: str, import_id: int) -> HttpResponseBase:
        job = self.get_tenant_object(ImportJob, import_id)
        filename = f"import-{job.pk}-rejected-rows.csv"
        if job.errors_file:
            try:
                stored = job.errors_file.open("rb")
            except FileNotFoundError:
                pass
            else:
                return FileResponse(stored, as_attachment=True, filename=filename, content_type="text/csv")
        response = HttpResponse(importer.rejected_rows_empty(job), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


# --- export -------------------------------------------------------------------------------
class ContactsExportView(TenantView):
    read_permission = Permission.EXPORT
    http_method_names = ["get"]

    def get(self, request: HttpRequest, tenant_slug: str) -> StreamingHttpResponse:
        lines = contacts_export_csv(tenant=self.tenant, acting=self.membership)
        filename = f"contacts-{self.tenant.slug}-{timezone.now():%Y%m%d-%H%M}.csv"
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "no-store"
        return response
