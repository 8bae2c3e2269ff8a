"""The platform admin for ad audiences: every tenant's destinations and exports, read-only; run, on and off
through the services inside the destination's tenant."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import models
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from audiences import services
from audiences.models import AudienceDestination, AudienceExport
from tenants.context import platform_access, tenant_context
from tenants.models import AuditLog, User
from tests.audiences.helpers import ACTOR, SECRET, allow_advertising, person, segment_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(world) -> Client:
    staff = User.objects.create_superuser("staff@segmentor.example", "a-long-password")
    client = Client()
    client.force_login(staff)
    return client


def admin_url(model: type[models.Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def destinations(world) -> list[AudienceDestination]:
    made = []
    for tenant in (world.tenant_a, world.tenant_b):
        with tenant_context(tenant.id):
            allow_advertising(tenant)
            segment = segment_of(tenant, [person(tenant, email=f"x@{tenant.slug}.example")], name=f"Seg {tenant.slug}")
            destination = services.destination_create(
                tenant=tenant, actor=ACTOR,
                data={"name": f"Hook {tenant.slug}", "segment": segment, "format": "google", "secret": SECRET,
                      "url": "https://hooks.example.com/a", "schedule": "interval", "interval_minutes": 60},
            )  # fmt: skip
            services.destination_run(destination=destination, actor=ACTOR, trigger="manual")
            made.append(destination)
    return made


def test_staff_see_every_tenants_destinations_and_exports(staff_client, destinations):
    page = staff_client.get(admin_url(AudienceDestination, "changelist")).content.decode()
    assert all(d.name in page for d in destinations)
    detail = staff_client.get(admin_url(AudienceDestination, "change", destinations[0].pk))
    assert detail.status_code == 200 and SECRET not in detail.content.decode()
    assert staff_client.get(admin_url(AudienceExport, "changelist")).status_code == 200
    with platform_access():
        export = AudienceExport.all_tenants.filter(destination=destinations[1]).get()
    assert staff_client.get(admin_url(AudienceExport, "change", export.pk)).status_code == 200
    assert staff_client.get(admin_url(AudienceDestination, "add")).status_code == 403


def test_actions_go_through_the_services(staff_client, destinations, django_capture_on_commit_callbacks):
    ids = [str(d.pk) for d in destinations]
    staff_client.post(admin_url(AudienceDestination, "changelist"), {"action": "turn_off", "_selected_action": ids})
    with platform_access():
        assert not PeriodicTask.objects.filter(pk__in=[d.periodic_task_id for d in destinations], enabled=True).exists()
        assert AuditLog.all_tenants.filter(action="audience.destination_updated").count() == 2
    # Each still has its first export queued: run now is refused for them, and says why.
    response = staff_client.post(
        admin_url(AudienceDestination, "changelist"), {"action": "run_now", "_selected_action": ids}, follow=True
    )
    assert "is still queued" in response.content.decode()
    with platform_access():
        AudienceExport.all_tenants.update(status="succeeded")
    with django_capture_on_commit_callbacks() as queued:
        staff_client.post(admin_url(AudienceDestination, "changelist"), {"action": "run_now", "_selected_action": ids})
    assert len(queued) == 2
    with platform_access():
        assert AudienceExport.all_tenants.filter(status="pending").count() == 2
