"""The segment pages: list, builder (create and edit), live preview, segment page, members, overlap, export."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers

from contacts.models import LifecycleStage
from segments import selectors
from segments.api.export import segment_members_csv
from segments.forms import MembersCursorForm, SegmentForm, StaticMembersForm, rules_text
from segments.models import Segment
from segments.services import (
    SegmentInvalid,
    segment_create,
    segment_delete,
    segment_update,
    static_members_add,
    static_members_remove,
)
from segments.starters import STARTER_TEMPLATES, STARTER_TEMPLATES_BY_KEY
from segments.tasks import refresh_segment
from tenants.audit import Actor
from tenants.roles import Permission
from tenants.web import TenantView, add_service_errors

MEMBERS_PAGE_SIZE = 50
CHART_DAYS = 90
MISSING_SHOWN = 50


def _is_partial(request: HttpRequest, target: str) -> bool:
    """An htmx request that swaps only ``target`` (not a history restore, which needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and htmx.target == target and not htmx.history_restore_request  # type: ignore[union-attr]


class SegmentsView(TenantView):
    """Base for the segment pages: the acting person and the segment in the URL."""

    def actor(self) -> Actor:
        return Actor.for_user(self.membership.user)

    def segment(self, segment_id: int) -> Segment:
        segment = self.get_tenant_object(Segment, segment_id)
        segment.tenant = self.tenant  # the same row, already loaded: spare the services a query
        return segment

    def url(self, name: str, segment: Segment | None = None) -> str:
        kwargs: dict[str, Any] = {"tenant_slug": self.tenant.slug}
        if segment is not None:
            kwargs["segment_id"] = segment.pk
        return reverse(f"segments:{name}", kwargs=kwargs)


# --- list ----------------------------------------------------------------------------------------
class SegmentListView(SegmentsView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        rows = selectors.segments_for_list(self.tenant)
        return render(request, "segments/segment_list.html", {"rows": rows})


# --- the builder: create and edit ----------------------------------------------------------------
class SegmentFormView(SegmentsView):
    """Shared by create and edit: the form, the builder's catalogue, the rule errors in place."""

    read_permission = Permission.EDIT_CONTENT  # the builder is of no use to someone who cannot save

    def template_rules(self) -> dict[str, Any] | None:
        """Rules of the "start from a template" choice in the query string (the page without JavaScript)."""
        template = STARTER_TEMPLATES_BY_KEY.get(self.request.GET.get("template", ""))
        return template.rules if template else None

    def render_form(
        self,
        form: SegmentForm,
        segment: Segment | None,
        *,
        rule_errors: Sequence[dict[str, str]] = (),
        status: int = 200,
    ) -> HttpResponse:
        preview_url = self.url("preview_segment", segment) if segment else self.url("preview")
        context = {
            "form": form,
            "segment": segment,
            "is_static": segment is not None and not segment.is_dynamic,
            "rule_errors": list(rule_errors),
            "catalogue": selectors.builder_catalogue(self.tenant),
            "starter_templates": [template.as_dict() for template in STARTER_TEMPLATES],
            "template_sections": _template_sections(),
            "preview_url": preview_url,
            "contacts_url": reverse("contacts:list", kwargs={"tenant_slug": self.tenant.slug}),
        }
        return render(self.request, "segments/segment_form.html", context, status=status)

    def save_errors(self, form: SegmentForm, error: ValidationError) -> list[dict[str, str]]:
        """Put a service's errors on the form; return the rule errors (path and message) for the builder."""
        rule_errors = [e.as_dict() for e in error.rule_errors] if isinstance(error, SegmentInvalid) else []
        if rule_errors:
            problems = "1 problem" if len(rule_errors) == 1 else f"{len(rule_errors)} problems"
            form.add_error("rules", f"The rules have {problems}, marked below.")
        if not hasattr(error, "error_dict"):
            form.add_error(None, error)
            return rule_errors
        # The rule errors are shown at their nodes; everything else goes on its field.
        others = {k: v for k, v in error.error_dict.items() if not (k == "rules" and rule_errors)}
        if others:
            add_service_errors(form, ValidationError(others))
        return rule_errors


def _template_sections() -> list[tuple[str, list[dict[str, Any]]]]:
    sections: dict[str, list[dict[str, Any]]] = {}
    for template in STARTER_TEMPLATES:
        sections.setdefault(template.section, []).append({"key": template.key, "label": template.label})
    return list(sections.items())


class SegmentCreateView(SegmentFormView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        rules = self.template_rules()
        form = SegmentForm(initial={"kind": Segment.Kind.DYNAMIC, "rules": rules_text(rules)})
        return self.render_form(form, None)

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = SegmentForm(request.POST)
        rule_errors: list[dict[str, str]] = []
        if form.is_valid():
            data = form.cleaned_data
            try:
                segment = segment_create(
                    tenant=self.tenant, actor=self.actor(), name=data["name"], kind=data["kind"],
                    rules=data["rules"], description=data["description"],
                )  # fmt: skip
            except ValidationError as error:
                rule_errors = self.save_errors(form, error)
            else:
                if segment.is_dynamic:
                    messages.success(request, "Segment created. Its members are being counted; this page updates.")
                else:
                    messages.success(request, "Static segment created. Add its members below.")
                return redirect(self.url("detail", segment))
        return self.render_form(form, None, rule_errors=rule_errors, status=400)


class SegmentEditView(SegmentFormView):
    def get(self, request: HttpRequest, tenant_slug: str, segment_id: int) -> HttpResponse:
        segment = self.segment(segment_id)
        rules = self.template_rules() or segment.rules
        initial = {"name": segment.name, "description": segment.description, "rules": rules_text(rules)}
        return self.render_form(SegmentForm(initial=initial, segment=segment), segment)

    def post(self, request: HttpRequest, tenant_slug: str, segment_id: int) -> HttpResponse:
        segment = self.segment(segment_id)
        form = SegmentForm(request.POST, segment=segment)
        rule_errors: list[dict[str, str]] = []
        if form.is_valid():
            data = form.cleaned_data
            try:
                segment_update(
                    segment=segment, actor=self.actor(), name=data["name"], description=data["description"],
                    rules=data["rules"] if segment.is_dynamic else None,
                )  # fmt: skip
            except ValidationError as error:
                rule_errors = self.save_errors(form, error)
            else:
                messages.success(request, "Segment saved.")
                return redirect(self.url("detail", segment))
        return self.render_form(form, segment, rule_errors=rule_errors, status=400)


class SegmentPreviewView(SegmentsView):
    """The builder's live count: POST a rule tree as JSON, get the count, a sample and the rule errors."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, segment_id: int | None = None) -> JsonResponse:
        segment = self.segment(segment_id) if segment_id is not None else None
        try:
            body = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested past the decoder
            body = None
        if not isinstance(body, dict) or "rules" not in body:
            error = {"path": "", "message": 'Send {"rules": <the rule tree>} as JSON.'}
            return JsonResponse({"count": None, "sample": [], "errors": [error], "timed_out": False}, status=400)
        preview = selectors.segment_preview(tenant=self.tenant, rules=body["rules"], segment=segment)
        data = preview.as_dict()
        contacts_url = reverse("contacts:list", kwargs={"tenant_slug": self.tenant.slug})
        stages = dict(LifecycleStage.choices)
        for row in data["sample"]:
            row["url"] = f"{contacts_url}{row['id']}/"
            row["name"] = _display_name(row)
            row["lifecycle_stage_label"] = stages.get(row.get("lifecycle_stage") or "", "")
            row["country"] = str(row.get("country") or "")
        response = JsonResponse(data)
        response["Cache-Control"] = "no-store"
        return response


def _display_name(row: dict[str, Any]) -> str:
    full = f"{row.get('first_name') or ''} {row.get('last_name') or ''}".strip()
    return full or row.get("email") or row.get("phone") or f"Contact #{row['id']}"


# --- the segment page ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class SizeChart:
    """Size over time as coordinates for an inline SVG (no script: the CSP and no-JS readers both welcome)."""

    width: int
    height: int
    left: int
    bottom: int
    line: str
    area: str
    points: list[ChartPoint]
    y_ticks: list[tuple[float, int]]
    first_label: str
    last_label: str
    rows: list[tuple[dt.datetime, int]]


def size_chart(history: Sequence[tuple[dt.datetime, int]], *, width: int = 960, height: int = 220) -> SizeChart | None:
    """Lay out the size history (one point per day when it is long); None when there is too little of it."""
    if len(history) > 120:
        per_day: dict[dt.date, tuple[dt.datetime, int]] = {}
        for when, size in history:
            per_day[when.date()] = (when, size)
        history = list(per_day.values())
    if len(history) < 2:
        return None
    left, right, top, bottom = 56, 12, 12, 28
    start, end = history[0][0].timestamp(), history[-1][0].timestamp()
    span = max(end - start, 1.0)
    peak = _nice_ceiling(max(size for _, size in history))
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(when: dt.datetime, size: int) -> tuple[float, float]:
        return (
            round(left + (when.timestamp() - start) / span * plot_w, 1),
            round(top + plot_h - size / peak * plot_h, 1),
        )

    coords = [xy(when, size) for when, size in history]
    line = " ".join(f"{x},{y}" for x, y in coords)
    base = top + plot_h
    area = f"M{coords[0][0]},{base} " + " ".join(f"L{x},{y}" for x, y in coords) + f" L{coords[-1][0]},{base} Z"
    points = [
        ChartPoint(x, y, f"{when:%Y-%m-%d %H:%M}: {size:,}")
        for (x, y), (when, size) in zip(coords, history, strict=True)
    ]
    ticks = [(round(top + plot_h - fraction * plot_h, 1), round(peak * fraction)) for fraction in (0, 0.5, 1)]
    return SizeChart(
        width=width, height=height, left=left, bottom=base, line=line, area=area, points=points, y_ticks=ticks,
        first_label=f"{history[0][0]:%Y-%m-%d}", last_label=f"{history[-1][0]:%Y-%m-%d}", rows=list(history),
    )  # fmt: skip


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _nice_ceiling(value: int) -> int:
    """A round number at or above ``value`` for the top of the axis (10, 20, 50, 100, ...)."""
    if value <= 10:
        return 10
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


class SegmentDetailView(SegmentsView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, segment_id: int) -> HttpResponse:
        segment = self.segment(segment_id)
        cursor = MembersCursorForm(request.GET)
        before = cursor.cleaned_data["before"] if cursor.is_valid() else None
        rows, next_cursor = selectors.members_page(segment, before=before, size=MEMBERS_PAGE_SIZE)
        stages = dict(LifecycleStage.choices)
        for row in rows:
            row["name"] = _display_name(row)
            row["stage_label"] = stages.get(row.get("lifecycle_stage") or "", "")
        detail_url = self.url("detail", segment)
        context: dict[str, Any] = {
            "segment": segment,
            "members": rows,
            "members_continued": before is not None,
            "first_url": detail_url,
            "next_url": f"{detail_url}?before={next_cursor}" if next_cursor else None,
            "contacts_url": reverse("contacts:list", kwargs={"tenant_slug": self.tenant.slug}),
        }
        zone = _zone(self.tenant.time_zone)
        if _is_partial(request, "segment-members"):
            response = render(request, "segments/_members.html", context)
        else:
            context.update(
                {
                    "chart": size_chart(
                        [
                            (timezone.localtime(when, zone), size)
                            for when, size in selectors.size_history(segment, days=CHART_DAYS)
                        ]
                    ),
                    "chart_days": CHART_DAYS,
                    "usages": selectors.segment_usages(segment),
                    "counting": segment.is_dynamic
                    and segment.materialized_version < segment.version
                    and not segment.refresh_error,
                    "rules_json": json.dumps(segment.rules, indent=2, ensure_ascii=False),
                    "members_form": StaticMembersForm(initial={"action": "add"}),
                }
            )
            response = render(request, "segments/segment_detail.html", context)
        patch_vary_headers(response, ["HX-Request", "HX-Target"])
        return response


class SegmentOverlapView(SegmentsView):
    """Shared members with the tenant's other segments: loaded into the segment page, or a page of its own."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, segment_id: int) -> HttpResponse:
        segment = self.segment(segment_id)
        others = list(
            Segment.objects.filter(tenant=self.tenant)
            .exclude(pk=segment.pk)
            .order_by("-size", "name")[: selectors.OVERLAP_MAX_SEGMENTS - 1]
        )
        total_others = Segment.objects.filter(tenant=self.tenant).exclude(pk=segment.pk).count()
        segments = [segment, *others]
        shared = selectors.overlap(self.tenant, segments)
        matrix = []
        for row in segments:
            cells = []
            for column in segments:
                if row.pk == column.pk:
                    cells.append({"diagonal": True, "count": row.size, "column": column})
                    continue
                count = shared.get((min(row.pk, column.pk), max(row.pk, column.pk)), 0)
                share = count / row.size if row.size else 0.0
                cells.append({"diagonal": False, "count": count, "share": share, "heat": min(4, int(share * 5))})
            matrix.append({"segment": row, "cells": cells})
        context = {
            "segment": segment,
            "segments": segments,
            "matrix": matrix,
            "warnings": selectors.overlap_warnings(segments, shared),
            "truncated": total_others > len(others),
            "max_segments": selectors.OVERLAP_MAX_SEGMENTS,
        }
        partial = _is_partial(request, "segment-overlap")
        template = "segments/_overlap.html" if partial else "segments/segment_overlap.html"
        response = render(request, template, context)
        patch_vary_headers(response, ["HX-Request", "HX-Target"])
        return response


# --- actions ---------------------------------------------------------------------------------------
class SegmentRefreshView(SegmentsView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, segment_id: int) -> HttpResponse:
        segment = self.segment(segment_id)
        if not segment.is_dynamic:
            messages.info(request, "A static segment changes only when members are added or removed.")
        else:
            tenant_id, pk = self.tenant.pk, segment.pk
            transaction.on_commit(lambda: refresh_segment.delay(tenant_id, pk))
            messages.success(request, "Refresh queued: the size and the members update in a moment.")
        return redirect(self.url("detail", segment))


class SegmentDeleteView(SegmentsView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, segment_id: int) -> HttpResponse:
        segment = self.segment(segment_id)
        name = segment.name
        try:
            segment_delete(segment=segment, actor=self.actor())
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return redirect(self.url("detail", segment))
        messages.success(request, f"Segment “{name}” deleted.")
        return redirect(self.url("list"))


class SegmentMembersView(SegmentsView):
    """Add or remove members of a static segment by pasted emails or external ids, or one contact."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, segment_id: int) -> HttpResponse:
        segment = self.segment(segment_id)
        form = StaticMembersForm(request.POST)
        if not form.is_valid():
            for errors in form.errors.values():
                messages.error(request, " ".join(str(e) for e in errors))
            return redirect(self.url("detail", segment))
        data = form.cleaned_data
        ids: list[int] = [data["contact"]] if data.get("contact") else []
        missing: list[str] = []
        if data["identifiers"]:
            found, missing = selectors.contacts_by_identifiers(self.tenant, data["identifiers"])
            ids.extend(found)
        adding = data["action"] == "add"
        try:
            change = static_members_add if adding else static_members_remove
            changed = change(segment=segment, actor=self.actor(), contact_ids=ids) if ids else 0
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return redirect(self.url("detail", segment))
        noun = "contact" if changed == 1 else "contacts"
        if adding:
            unchanged = len(ids) - changed
            extra = f" ({unchanged} already a member{'s' if unchanged != 1 else ''})" if unchanged else ""
            messages.success(request, f"Added {changed} {noun}{extra}.")
        else:
            messages.success(request, f"Removed {changed} {noun}.")
        if missing:
            shown = ", ".join(missing[:MISSING_SHOWN])
            more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
            messages.warning(request, f"Not found ({len(missing)}): {shown}{more}.")
        return redirect(self.url("detail", segment))


class SegmentExportView(SegmentsView):
    """Download the members as CSV: streamed in keyset pages, recorded in the audit log (as the API's)."""

    read_permission = Permission.EXPORT
    http_method_names = ["get"]

    def get(self, request: HttpRequest, tenant_slug: str, segment_id: int) -> StreamingHttpResponse:
        segment = self.segment(segment_id)
        lines = segment_members_csv(segment=segment, actor=self.actor())
        filename = f"segment-{segment.pk}-{timezone.now():%Y%m%d-%H%M}.csv"
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "no-store"
        return response
