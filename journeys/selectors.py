"""Reading journeys: the list with counts, per-step figures, enrollments and a contact's path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet

from journeys.models import Enrollment, EnrollmentStep, Journey, JourneyVersion, Step
from tenants.models import Tenant


def journey_list(*, tenant: Tenant, status: str | None = None, search: str | None = None) -> QuerySet[Journey]:
    """The tenant's journeys by name, with ``active``, ``entered`` and ``converted`` counts."""
    journeys = Journey.objects.filter(tenant=tenant).select_related("live_version")
    if status:
        journeys = journeys.filter(status=status)
    if search and search.strip():
        journeys = journeys.filter(name__icontains=search.strip())
    return journeys.order_by("name", "id")


def journey_counts(*, tenant: Tenant, journey_ids: list[int]) -> dict[int, dict[str, int]]:
    """Per journey: enrollments by status and in all (``entered``), in one query."""
    rows = (
        Enrollment.objects.filter(tenant=tenant, journey_id__in=journey_ids)
        .values("journey_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    names = [*Enrollment.Status.values, "entered"]
    counts: dict[int, dict[str, int]] = {pk: dict.fromkeys(names, 0) for pk in journey_ids}
    for row in rows:
        counts[row["journey_id"]][row["status"]] = row["n"]
        counts[row["journey_id"]]["entered"] += row["n"]
    return counts


@dataclass(frozen=True)
class JourneySummary:
    entered: int
    active: int
    completed: int
    converted: int
    exited: int

    @property
    def conversion_rate(self) -> float:
        """Converted among those who entered (0 when none did)."""
        return self.converted / self.entered if self.entered else 0.0


def journey_summary(*, journey: Journey) -> JourneySummary:
    counts = journey_counts(tenant=journey.tenant, journey_ids=[journey.pk])[journey.pk]
    return JourneySummary(
        entered=counts["entered"], active=counts["active"], completed=counts["completed"],
        converted=counts["converted"], exited=counts["exited"],
    )  # fmt: skip


@dataclass(frozen=True)
class StepFigures:
    """How many contacts wait at a step now, have passed it, and converted after passing it."""

    waiting: int = 0
    passed: int = 0
    converted: int = 0


def step_figures(*, journey: Journey, version: JourneyVersion) -> dict[str, StepFigures]:
    """Figures per step key, over every version of the journey (keys carry over between versions)."""
    tenant_id = journey.tenant_id
    keys = dict(Step.objects.filter(tenant=tenant_id, version__journey=journey).values_list("pk", "key"))
    waiting: dict[str, int] = {}
    for step_id, n in (
        Enrollment.objects.filter(tenant=tenant_id, journey=journey, status=Enrollment.Status.ACTIVE)
        .values_list("step_id")
        .annotate(n=Count("id"))
        .order_by()
    ):
        if step_id in keys:
            waiting[keys[step_id]] = waiting.get(keys[step_id], 0) + n
    passed: dict[str, int] = {}
    converted: dict[str, int] = {}
    history = EnrollmentStep.objects.filter(tenant=tenant_id, step_id__in=list(keys), left_at__isnull=False)
    rows = (
        history.values("step_id")
        .annotate(
            n=Count("enrollment_id", distinct=True),
            won=Count(
                "enrollment_id",
                distinct=True,
                filter=Q(
                    enrollment_id__in=Enrollment.objects.filter(
                        tenant=tenant_id, journey=journey, status=Enrollment.Status.CONVERTED
                    ).values("id")
                ),
            ),
        )
        .order_by()
    )
    for row in rows:
        key = keys[row["step_id"]]
        passed[key] = passed.get(key, 0) + row["n"]
        converted[key] = converted.get(key, 0) + row["won"]
    version_keys = Step.objects.filter(tenant=tenant_id, version=version).values_list("key", flat=True)
    return {key: StepFigures(waiting.get(key, 0), passed.get(key, 0), converted.get(key, 0)) for key in version_keys}


def enrollment_list(*, journey: Journey, status: str | None = None) -> QuerySet[Enrollment]:
    """A journey's enrollments, newest first, with the contact and current step."""
    enrollments = Enrollment.objects.filter(tenant=journey.tenant_id, journey=journey).select_related(
        "contact", "step", "version"
    )
    if status:
        enrollments = enrollments.filter(status=status)
    return enrollments.order_by("-entered_at", "-id")


def enrollment_path(*, enrollment: Enrollment) -> list[dict[str, Any]]:
    """The steps an enrollment took, in order: key, kind, name, arrived, left, exit taken, delivery."""
    rows = EnrollmentStep.objects.filter(tenant=enrollment.tenant_id, enrollment_id=enrollment.pk).order_by("seq")
    steps = {s.pk: s for s in Step.objects.filter(tenant=enrollment.tenant_id, pk__in=[r.step_id for r in rows])}
    path = []
    for row in rows:
        step = steps.get(row.step_id)
        path.append(
            {
                "seq": row.seq, "key": step.key if step else "", "kind": step.kind if step else "",
                "name": str(step) if step else "(deleted step)", "entered_at": row.entered_at,
                "left_at": row.left_at, "outcome": row.outcome, "delivery_id": row.delivery_id, "detail": row.detail,
            }
        )  # fmt: skip
    return path


def journey_version_shown(*, journey: Journey) -> JourneyVersion | None:
    """The version the builder, the API and the admin show: the draft being edited, else the live one.

    Unlike ``services.journey_draft`` it never creates a draft, so reading a live journey writes nothing.
    """
    draft = JourneyVersion.objects.filter(tenant=journey.tenant_id, journey=journey, published_at__isnull=True).first()
    if draft is not None or journey.live_version_id is None:
        return draft
    return JourneyVersion.objects.filter(tenant=journey.tenant_id, pk=journey.live_version_id).first()


def version_steps(*, version: JourneyVersion, keys: list[str] | None = None) -> list[Step]:
    """A version's steps in order (or those with ``keys``), each send step with its campaign and variants."""
    from django.db.models import Prefetch

    from campaigns.models import Variant

    steps = Step.objects.filter(tenant=version.tenant_id, version=version)
    if keys is not None:
        steps = steps.filter(key__in=keys)
    variants = Variant.all_tenants.filter(tenant_id=version.tenant_id).order_by("position", "id")
    return list(
        steps.select_related("campaign")
        .prefetch_related(Prefetch("campaign__variants", queryset=variants))
        .order_by("position", "id")
    )
