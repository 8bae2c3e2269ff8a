"""The contacts pages: list, contact page, edits, consent, privacy requests, settings lists, opt-in link."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import validate_ipv46_address
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views import View

from contacts import selectors
from contacts.consent import (
    REMOVABLE_SUPPRESSION_REASONS,
    ConfirmationPreview,
    ConsentEvidence,
    confirmation_preview,
    consent_change,
    consent_confirm,
    consent_request_confirmation,
    suppression_add,
    suppression_remove,
)
from contacts.forms import (
    AttributeDefinitionForm,
    ConsentChangeForm,
    ContactFilterForm,
    ContactForm,
    EraseForm,
    SuppressionForm,
    SuppressionLookupForm,
    TimelineCursorForm,
)
from contacts.models import AttributeDefinition, ConsentSource, ConsentStatus, Contact, Suppression
from contacts.privacy import contact_erase, contact_export
from contacts.services import attribute_define, attribute_delete, contact_update, contact_upsert
from tenants.audit import Actor
from tenants.roles import Permission
from tenants.web import TenantView


def _is_partial(request: HttpRequest, target: str) -> bool:
    """An htmx request that swaps only ``target`` (not a history restore, which needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and htmx.target == target and not htmx.history_restore_request  # type: ignore[union-attr]


def _with_cursor(request: HttpRequest, url: str, cursor: str | None) -> str:
    """The same list with the same filters, at another page (or the first, for None)."""
    query = request.GET.copy()
    query.pop("cursor", None)
    if cursor is not None:
        query["cursor"] = cursor
    return f"{url}?{query.urlencode()}" if query else url


class ContactsView(TenantView):
    """Base for the contacts pages: the acting person and the contact in the URL."""

    def actor(self) -> Actor:
        return Actor.for_user(self.membership.user)

    def contact(self, contact_id: int) -> Contact:
        contact = self.get_tenant_object(Contact, contact_id)
        contact.tenant = self.tenant  # the same row, already loaded: spare the services a query
        return contact

    def contact_url(self, contact: Contact) -> str:
        return reverse("contacts:detail", kwargs={"tenant_slug": self.tenant.slug, "contact_id": contact.pk})


# --- list ------------------------------------------------------------------------------------
class ContactListView(ContactsView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = ContactFilterForm(request.GET, tenant=self.tenant)
        page, status = None, 200
        if form.is_valid():
            page = selectors.contact_list_page(
                tenant=self.tenant, filters=form.filters, cursor=form.cleaned_data["cursor"]
            )
        else:
            status = 400
        list_url = reverse("contacts:list", kwargs={"tenant_slug": self.tenant.slug})
        context = {
            "form": form,
            "page": page,
            "filters_active": form.is_valid() and form.filters.active,
            "contacts_base": list_url,
            "first_url": _with_cursor(request, list_url, None),
            "next_url": _with_cursor(request, list_url, page.next_cursor if page else None),
            "prev_url": _with_cursor(request, list_url, page.prev_cursor if page else None),
        }
        partial = _is_partial(request, "contact-results")
        template = "contacts/_contact_table.html" if partial else "contacts/contact_list.html"
        response = render(request, template, context, status=status)
        # The same URL answers htmx with a fragment and browsers with the page: keep caches apart.
        patch_vary_headers(response, ["HX-Request"])
        return response


# --- the contact page --------------------------------------------------------------------------
class ContactDetailView(ContactsView):
    def get(self, request: HttpRequest, tenant_slug: str, contact_id: int) -> HttpResponse:
        contact = self.contact(contact_id)
        cursor_form = TimelineCursorForm(request.GET)
        if not cursor_form.is_valid():
            return render(
                request, "contacts/contact_bad_link.html", {"contact": contact, "form": cursor_form}, status=400
            )
        timeline = selectors.contact_timeline(contact, before=cursor_form.cleaned_data["before"])
        if _is_partial(request, "timeline-more"):
            response = render(request, "contacts/_timeline_rows.html", {"contact": contact, "timeline": timeline})
        else:
            definitions = selectors.attribute_definitions_of(self.tenant)
            context = {
                "contact": contact,
                "profile": selectors.contact_profile(contact),
                "attributes": selectors.contact_attributes(contact, definitions),
                "consent": selectors.contact_consent(contact),
                "lifecycle": selectors.lifecycle_history(contact),
                "engagement": selectors.engagement_totals(contact),
                "engagement_days": selectors.ENGAGEMENT_DAYS,
                "timeline": timeline,
                "timeline_continued": cursor_form.cleaned_data["before"] is not None,
            }
            response = render(request, "contacts/contact_detail.html", context)
        patch_vary_headers(response, ["HX-Request", "HX-Target"])
        return response


class ContactCreateView(ContactsView):
    read_permission = Permission.EDIT_CONTENT  # the form is of no use to someone who cannot send it

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self._render(ContactForm(definitions=selectors.attribute_definitions_of(self.tenant)))

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = ContactForm(request.POST, definitions=selectors.attribute_definitions_of(self.tenant))
        if form.is_valid():
            try:
                contact, created = contact_upsert(tenant=self.tenant, data=form.create_data())
            except ValidationError as error:
                form.add_service_errors(error)
            else:
                if created:
                    messages.success(request, "Contact created.")
                else:
                    messages.info(request, "A contact with this email or external id existed; it was updated.")
                return redirect(self.contact_url(contact))
        return self._render(form, status=400)

    def _render(self, form: ContactForm, status: int = 200) -> HttpResponse:
        return render(self.request, "contacts/contact_form.html", {"form": form, "contact": None}, status=status)


class ContactEditView(ContactsView):
    read_permission = Permission.EDIT_CONTENT

    def get(self, request: HttpRequest, tenant_slug: str, contact_id: int) -> HttpResponse:
        contact = self.contact(contact_id)
        definitions = selectors.attribute_definitions_of(self.tenant)
        return self._render(contact, ContactForm(definitions=definitions, contact=contact))

    def post(self, request: HttpRequest, tenant_slug: str, contact_id: int) -> HttpResponse:
        contact = self.contact(contact_id)
        form = ContactForm(request.POST, definitions=selectors.attribute_definitions_of(self.tenant))
        if form.is_valid():
            try:
                contact_update(contact=contact, data=form.update_data())
            except ValidationError as error:
                form.add_service_errors(error)
            else:
                messages.success(request, "Contact saved.")
                return redirect(self.contact_url(contact))
        return self._render(contact, form, status=400)

    def _render(self, contact: Contact, form: ContactForm, status: int = 200) -> HttpResponse:
        return render(self.request, "contacts/contact_form.html", {"form": form, "contact": contact}, status=status)


class ContactConsentView(ContactsView):
    read_permission = Permission.EDIT_CONTENT

    def get(self, request: HttpRequest, tenant_slug: str, contact_id: int) -> HttpResponse:
        contact = self.contact(contact_id)
        initial = {key: request.GET[key] for key in ("channel", "purpose") if key in request.GET}
        return self._render(contact, ConsentChangeForm(tenant=self.tenant, initial=initial))

    def post(self, request: HttpRequest, tenant_slug: str, contact_id: int) -> HttpResponse:
        contact = self.contact(contact_id)
        form = ConsentChangeForm(request.POST, tenant=self.tenant)
        if form.is_valid():
            data = form.cleaned_data
            evidence = ConsentEvidence(
                source=ConsentSource.ADMIN,
                legal_basis=data["legal_basis"],
                wording=data["wording"],
                wording_version=data["wording_version"],
            )
            try:
                if data["status"] == ConsentStatus.PENDING:
                    consent_request_confirmation(
                        contact=contact, purpose=data["purpose"], evidence=evidence, actor=self.actor()
                    )
                else:
                    consent_change(
                        contact=contact, channel=data["channel"], purpose=data["purpose"], status=data["status"],
                        evidence=evidence, actor=self.actor(),
                    )  # fmt: skip
            except ValidationError as error:
                form.add_service_errors(error)
            else:
                if data["status"] == ConsentStatus.PENDING:
                    messages.success(request, "Confirmation email sent; consent counts once the person confirms.")
                else:
                    messages.success(request, "Consent recorded.")
                return redirect(self.contact_url(contact))
        return self._render(contact, form, status=400)

    def _render(self, contact: Contact, form: ConsentChangeForm, status: int = 200) -> HttpResponse:
        context = {"contact": contact, "form": form, "consent": selectors.contact_consent(contact)}
        return render(self.request, "contacts/contact_consent.html", context, status=status)


class ContactExportView(ContactsView):
    """Download everything held on the contact as JSON (GDPR art. 15). POST: it is recorded."""

    write_permission = Permission.EXPORT
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, contact_id: int) -> HttpResponse:
        contact = self.contact(contact_id)
        data = contact_export(contact=contact, actor=self.actor())
        response = HttpResponse(
            json.dumps(data, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False),
            content_type="application/json; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="contact-{contact.pk}.json"'
        response["Cache-Control"] = "no-store"
        return response


class ContactEraseView(ContactsView):
    """Erase a contact's personal data (GDPR art. 17), after a confirmation page."""

    read_permission = Permission.EDIT_CONTENT

    def get(self, request: HttpRequest, tenant_slug: str, contact_id: int) -> HttpResponse:
        return self._render(self.contact(contact_id), EraseForm())

    def post(self, request: HttpRequest, tenant_slug: str, contact_id: int) -> HttpResponse:
        contact = self.contact(contact_id)
        if contact.erased_at is not None:
            messages.info(request, "This contact was already erased.")
            return redirect(self.contact_url(contact))
        form = EraseForm(request.POST)
        if not form.is_valid():
            return self._render(contact, form, status=400)
        contact_erase(contact=contact, actor=self.actor())
        messages.success(request, "The contact's personal data was erased; their addresses stay suppressed.")
        return redirect(self.contact_url(contact))

    def _render(self, contact: Contact, form: EraseForm, status: int = 200) -> HttpResponse:
        return render(self.request, "contacts/contact_erase.html", {"contact": contact, "form": form}, status=status)


# --- settings: attributes, suppressions, audit log -----------------------------------------------
class AttributeListView(ContactsView):
    write_permission = Permission.MANAGE_TENANT

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self._render(AttributeDefinitionForm())

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = AttributeDefinitionForm(request.POST)
        if form.is_valid():
            try:
                definition = attribute_define(tenant=self.tenant, actor=self.actor(), **form.cleaned_data)
            except ValidationError as error:
                form.add_service_errors(error)
            else:
                messages.success(request, f"Attribute “{definition.label}” ({definition.key}) defined.")
                return redirect("contacts:attributes", tenant_slug=self.tenant.slug)
        return self._render(form, status=400)

    def _render(self, form: AttributeDefinitionForm, status: int = 200) -> HttpResponse:
        context = {
            "definitions": selectors.attribute_definitions_of(self.tenant),
            "form": form,
            "can_manage": self.can(Permission.MANAGE_TENANT),
            "section": "attributes",
        }
        return render(self.request, "contacts/attributes.html", context, status=status)


class AttributeDeleteView(ContactsView):
    write_permission = Permission.MANAGE_TENANT
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, attribute_id: int) -> HttpResponse:
        definition = self.get_tenant_object(AttributeDefinition, attribute_id)
        attribute_delete(definition=definition, actor=self.actor())
        messages.success(request, f"Attribute “{definition.label}” ({definition.key}) deleted.")
        return redirect("contacts:attributes", tenant_slug=self.tenant.slug)


class SuppressionListView(ContactsView):
    write_permission = Permission.MANAGE_TENANT

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self._render(SuppressionForm())

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = SuppressionForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                suppression_add(
                    tenant=self.tenant, channel=data["channel"], address=data["address"],
                    reason=Suppression.Reason.MANUAL, note=data["note"], actor=self.actor(),
                )  # fmt: skip
            except ValidationError as error:
                form.add_service_errors(error)
            else:
                messages.success(request, f"The address is suppressed on {data['channel']}.")
                return redirect("contacts:suppressions", tenant_slug=self.tenant.slug)
        return self._render(form, status=400)

    def _render(self, form: SuppressionForm, status: int = 200) -> HttpResponse:
        lookup = SuppressionLookupForm(self.request.GET)
        page = None
        if lookup.is_valid():
            page = selectors.suppressions_page(
                tenant=self.tenant, address=lookup.cleaned_data["address"], cursor=lookup.cleaned_data["cursor"]
            )
        elif status == 200:
            status = 400
        context = {
            "page": page,
            "lookup": lookup,
            "form": form,
            "can_manage": self.can(Permission.MANAGE_TENANT),
            "removable": REMOVABLE_SUPPRESSION_REASONS,
            "section": "suppressions",
        }
        return render(self.request, "contacts/suppressions.html", context, status=status)


class SuppressionDeleteView(ContactsView):
    write_permission = Permission.MANAGE_TENANT
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, suppression_id: int) -> HttpResponse:
        suppression = self.get_tenant_object(Suppression, suppression_id)
        try:
            suppression_remove(suppression=suppression, actor=self.actor())
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, "Suppression removed: the address may be messaged again if it has consent.")
        return redirect("contacts:suppressions", tenant_slug=self.tenant.slug)


class AuditLogView(ContactsView):
    """Who did what in the workspace: for admins and owners."""

    read_permission = Permission.MANAGE_TENANT
    write_permission = Permission.MANAGE_TENANT
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = TimelineCursorForm(request.GET)
        page, status = None, 200
        if form.is_valid():
            page = selectors.audit_log_page(tenant=self.tenant, before=form.cleaned_data["before"])
        else:
            status = 400
        context = {"page": page, "form": form, "section": "audit"}
        return render(request, "contacts/audit_log.html", context, status=status)


# --- public: the double opt-in link --------------------------------------------------------------
class ConsentConfirmView(View):
    """The link in a double opt-in email. GET only shows a button: mail scanners fetch links."""

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        try:
            preview = confirmation_preview(token=token)
        except ValidationError as error:
            return self._invalid(error)
        return render(request, "contacts/consent_confirm.html", self._context(preview))

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        try:
            preview = confirmation_preview(token=token)
            consent_confirm(
                token=token, ip_address=_client_ip(request), user_agent=request.headers.get("User-Agent", "")[:500]
            )
        except ValidationError as error:
            return self._invalid(error)
        return render(request, "contacts/consent_confirmed.html", self._context(preview))

    @staticmethod
    def _context(preview: ConfirmationPreview) -> dict[str, object]:
        return {"preview": preview, "purpose_label": selectors.purpose_label(preview.purpose).lower()}

    def _invalid(self, error: ValidationError) -> HttpResponse:
        return render(self.request, "contacts/consent_confirm_invalid.html", {"errors": error.messages}, status=400)


def _client_ip(request: HttpRequest) -> str | None:
    address = request.META.get("REMOTE_ADDR") or ""
    try:
        validate_ipv46_address(address)
    except ValidationError:
        return None
    return address
