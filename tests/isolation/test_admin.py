"""The Django admin, walked through every registered ModelAdmin (``admin.site._registry``).

The admin is the platform's (README: "for platform staff"): staff get platform access there
(tenants.middleware) and see every tenant, on purpose; there are no tenant-scoped staff. So:

- a tenant's owner or admin who is not platform staff gets nothing: every admin URL (lists,
  add, change, delete and history of tenant B's rows) sends them to the admin's login;
- staff without a model's permissions get 403 on all of it, B's rows included;
- platform staff cannot make a tenant's row point at another tenant's: every editable relation
  to a tenant-owned model in every change form and inline (found from the forms themselves),
  and the ids inside segment rules and journey step configs, refuse tenant B's object on tenant
  A's row, and nothing of B's changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib import admin
from django.db import models, transaction
from django.forms import ModelChoiceField
from django.test import Client, RequestFactory
from django.urls import NoReverseMatch, reverse

from tenants.context import platform_access
from tenants.models import Tenant, TenantOwnedModel, User
from tests.conftest import World
from tests.isolation.guard import cross_tenant_references, fingerprint_changes, tenant_fingerprint
from tests.isolation.htmlforms import html_forms
from tests.isolation.probes import form_errors
from tests.isolation.scene import build_scenes

pytestmark = pytest.mark.django_db

# The list, and the change and delete pages of B's row (GET, and POST for delete: the one that acts).
VIEWS = (("changelist", "get"), ("change", "get"), ("delete", "get"), ("delete", "post"))


def registered() -> list[tuple[type[models.Model], admin.ModelAdmin]]:
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


def tenant_b_object(model: type[models.Model], world: World) -> Any:
    """A row of tenant B's for ``model`` (the tenant itself, its owner, or any row for global models)."""
    with platform_access():
        if model is Tenant:
            return world.tenant_b.pk
        if model is User:
            return world.charlie.pk
        if issubclass(model, TenantOwnedModel):
            return model.all_tenants.filter(tenant=world.tenant_b).values_list("pk", flat=True).first() or 1
        return model._base_manager.values_list("pk", flat=True).first() or 1


def admin_urls(world: World, only: str = "", views: Any = VIEWS) -> Iterator[tuple[str, str, str]]:
    """(ModelAdmin, verb, URL) for the views of every registered ModelAdmin, the rows being tenant B's."""
    for model, model_admin in registered():
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        if only not in info:
            continue
        pk = tenant_b_object(model, world)
        for view, verb in views:
            try:
                url = reverse(f"{info}_{view}", args=() if view == "changelist" else (pk,))
            except NoReverseMatch:
                continue
            yield type(model_admin).__name__, verb, url


def walk_problems(
    client: Client, world: World, allowed: set[int], login_redirect: bool = False, only: str = "", views: Any = VIEWS
) -> list[str]:
    problems = []
    for name, verb, url in admin_urls(world, only, views):
        response = getattr(client, verb)(url)
        if response.status_code not in allowed:
            problems.append(f"{verb.upper()} {url} ({name}): {response.status_code}")
        elif login_redirect and "/admin/login/" not in response.get("Location", ""):
            problems.append(f"{verb.upper()} {url} ({name}): redirected to {response.get('Location')}")
    return problems


def test_every_model_admin_is_walked(world: World):
    walked = {name for name, _, _ in admin_urls(world)}
    assert walked == {type(model_admin).__name__ for _, model_admin in registered()}
    assert len(walked) >= 40


def test_a_tenant_owner_who_is_not_staff_gets_nothing_from_the_admin(world: World, alice_client: Client):
    assert not world.alice.is_staff
    assert walk_problems(alice_client, world, allowed={302}, login_redirect=True) == []


def test_staff_without_permissions_get_403_on_every_model(world: World):
    staff = User.objects.create_user("staff@platform.example", is_staff=True)
    client = Client()
    client.force_login(staff)
    # Django checks permissions before it looks the row up: the list and the delete (POST) stand for all.
    views = (("changelist", "get"), ("delete", "post"))
    assert walk_problems(client, world, allowed={403}, views=views) == []


def test_the_walk_catches_a_tenant_admin_who_sees_tenant_b(world: World, alice_client: Client):
    """The walk means something: made superuser, Alice reaches tenant B's rows, and the walk says so."""
    User.objects.filter(pk=world.alice.pk).update(is_staff=True, is_superuser=True)
    problems = walk_problems(alice_client, world, allowed={302, 403}, only="contacts_contact")
    assert any("/admin/contacts/contact/" in problem and ": 200" in problem for problem in problems)


# --- platform staff: no row of A may point at B's ---------------------------------------------------
@dataclass(frozen=True)
class Relation:
    admin: str
    url: str  # the change page of tenant A's row
    field: str  # the control's HTML name
    target: type[models.Model]


def _relation_fields(response: Any) -> Iterator[tuple[str, type[models.Model]]]:
    """Editable relations to tenant-owned models in the change form and its inlines, by HTML name."""
    context = response.context
    forms = [context["adminform"].form]
    for inline in context.get("inline_admin_formsets") or []:
        forms += list(inline.formset.forms)[:1]  # the first row (saved or extra) stands for all
    for form in forms:
        # An inline row's own id names the row, not a relation: a foreign one is ignored by Django's formset.
        own_pk = form._meta.model._meta.pk.name if hasattr(form, "_meta") else None
        for name, field in form.fields.items():
            model = getattr(getattr(field, "queryset", None), "model", None)
            if (
                isinstance(field, ModelChoiceField)
                and not field.disabled
                and name not in ("tenant", own_pk)
                and model is not None
                and issubclass(model, TenantOwnedModel)
            ):
                yield form.add_prefix(name), model


def _a_row(model: type[models.Model], world: World) -> Any:
    with platform_access():
        return model.all_tenants.filter(tenant=world.tenant_a).order_by("pk").first()  # type: ignore[attr-defined]


def _has_editable_relations(model_admin: admin.ModelAdmin, user: User, row: Any = None) -> bool:
    """Whether the admin's form for ``row`` (the add form without one), or an inline's, lets staff
    choose a tenant-owned row (read without rendering the page)."""
    request = RequestFactory().get("/admin/")
    request.user = user
    with platform_access():
        allowed = model_admin.has_change_permission(request, row) if row else model_admin.has_add_permission(request)
        if not allowed:
            return False
        fields = dict(model_admin.get_form(request, row).base_fields)
        for inline in model_admin.get_inline_instances(request, row):
            fields.update(inline.get_formset(request, row).form.base_fields)
    return any(
        isinstance(field, ModelChoiceField)
        and name != "tenant"
        and issubclass(getattr(field.queryset, "model", models.Model), TenantOwnedModel)
        for name, field in fields.items()
    )


def relations(client: Client, world: World, admin_user: User) -> tuple[list[Relation], list[str]]:
    """Every editable relation of every ModelAdmin (on tenant A's first row); and admins with no row to try."""
    found, untried = [], []
    for model, model_admin in registered():
        if not issubclass(model, TenantOwnedModel):
            continue
        row = _a_row(model, world)
        if row is None:
            if _has_editable_relations(model_admin, admin_user):
                untried.append(type(model_admin).__name__)
            continue
        if not _has_editable_relations(model_admin, admin_user, row):
            continue
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=(row.pk,))
        response = client.get(url)
        if response.status_code != 200 or response.context is None or "adminform" not in response.context:
            continue
        found += [
            Relation(type(model_admin).__name__, url, name, target) for name, target in _relation_fields(response)
        ]
    return found, untried


def post_change(client: Client, url: str, pages: dict[str, str], changes: dict[str, Any] | None = None) -> Any:
    """Post the change form back as a browser would, with ``changes`` (``pages`` caches the forms read)."""
    if url not in pages:
        pages[url] = client.get(url).content.decode()
    html = pages[url]
    form = max((f for f in html_forms(html) if f.method == "post"), key=lambda f: len(f.names))  # not the logout form
    return client.post(url, form.data(_save="Save", **{k: str(v) for k, v in (changes or {}).items()}))


# Ids inside JSON that an admin form edits: (model, field, JSON naming the segment id).
EMBEDDED = {
    "SegmentAdmin": ("segments.Segment", "rules", lambda pk: {"all": [{"type": "segment", "op": "in", "segment": pk}]}),
}


def refused(response: Any, field: str) -> bool:
    return response.status_code == 200 and any(
        key == field or key.endswith(f"-{field}") for key in form_errors(response)
    )


def test_platform_staff_cannot_point_tenant_a_rows_at_tenant_b_objects(
    world: World, admin_client: Client, admin_user: User
):
    a, b = build_scenes(world)
    found, untried = relations(admin_client, world, admin_user)
    expected = {("CampaignAdmin", "audience-0-segment"), ("CampaignAdmin", "variants-0-target_segment"),
                ("JourneyAdmin", "trigger_segment")}  # fmt: skip
    assert {(r.admin, r.field) for r in found} >= expected, "the walk found too little to mean much"
    before = tenant_fingerprint(b.tenant.pk)
    problems: list[str] = []
    pages: dict[str, str] = {}
    for url in sorted({relation.url for relation in found}):
        with transaction.atomic():  # the form as shown saves: a 200 below is the refusal, not a bad post
            unchanged = post_change(admin_client, url, pages)
            transaction.set_rollback(True)
        if unchanged.status_code != 302:
            problems.append(f"{url} does not save as shown: {unchanged.status_code} {form_errors(unchanged)}")
    for relation in found:
        with platform_access():
            rows = relation.target._base_manager.filter(tenant=world.tenant_b)  # _base_manager: all_tenants
            foreign = rows.values_list("pk", flat=True).first()
        if foreign is None:
            problems.append(f"{relation.admin}.{relation.field}: no {relation.target.__name__} of B's to try")
            continue
        with transaction.atomic():
            response = post_change(admin_client, relation.url, pages, {relation.field: foreign})
            crossed = cross_tenant_references()
            transaction.set_rollback(True)
        if not refused(response, relation.field.rsplit("-", 1)[-1]) or crossed:
            problems.append(
                f"{relation.admin} {relation.field}={foreign}: {response.status_code} {crossed} {form_errors(response)}"
            )
    for name, (label, field, value) in EMBEDDED.items():
        with platform_access():
            row = a["segment_id"]
        url = reverse(f"admin:{label.replace('.', '_').lower()}_change", args=(row,))
        with transaction.atomic():
            response = post_change(admin_client, url, pages, {field: json.dumps(value(b["static_segment_id"]))})
            own = post_change(admin_client, url, pages, {field: json.dumps(value(a["static_segment_id"]))})
            crossed = cross_tenant_references()
            transaction.set_rollback(True)
        if not refused(response, field) or own.status_code != 302 or crossed:
            problems.append(
                f"{name} {field}: {response.status_code}, own {own.status_code} {crossed} {form_errors(response)}"
                f" {form_errors(own)}"
            )
    assert not problems, "\n".join(problems)
    assert fingerprint_changes(before, tenant_fingerprint(b.tenant.pk)) == []
    assert untried == [], f"these admins edit relations; give tenant A a row of theirs in the scene: {untried}"


def test_platform_staff_cannot_move_a_row_to_another_tenant(world: World, admin_client: Client, admin_user: User):
    """A row stays with its tenant: moved, an API key of A's would open B's data to A's integration."""
    build_scenes(world)
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    moved, tried = [], []
    pages: dict[str, str] = {}
    for model, model_admin in registered():
        row = _a_row(model, world) if issubclass(model, TenantOwnedModel) else None
        with platform_access():
            if row is None or not model_admin.has_change_permission(request, row):
                continue
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=(row.pk,))
        tried.append(type(model_admin).__name__)
        with transaction.atomic():
            post_change(admin_client, url, pages, {"tenant": world.tenant_b.pk})
            with platform_access():
                now = model._base_manager.filter(pk=row.pk).values_list("tenant_id", flat=True).first()
            transaction.set_rollback(True)
        if now not in (None, world.tenant_a.pk):
            moved.append(type(model_admin).__name__)
    assert moved == []
    assert {"ApiKeyAdmin", "MembershipAdmin", "CampaignAdmin", "SegmentAdmin"} <= set(tried), tried
