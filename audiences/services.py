"""Every write of ad audiences: destinations and their beat rows, export records, downloads, pushes.

- ``destination_create`` / ``destination_update`` / ``destination_delete`` check a destination (a
  segment of the workspace, an HTTPS URL that is not a private address, a signing secret, an interval
  or a crontab) and keep its django-celery-beat row in step, as campaigns do (campaigns/scheduling.py).
- ``export_start`` records an export; ``download_stream`` streams a download and records how it
  ended; ``export_push`` builds a destination's file once (stored until the push settles) and pushes
  it part by part, retrying transient failures with exponential backoff.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import secrets
import tempfile
from collections.abc import Generator, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from audiences import push
from audiences.models import AudienceDestination, AudienceExport, AudienceFormat, ExportKind
from audiences.selectors import ADVERTISING_PURPOSE, AudienceFile, audience_file, member_rows
from campaigns.channels.http import OutboundHttp, is_public_address
from campaigns.scheduling import crontab_fields, tenant_zone
from segments.models import Segment
from tenants.audit import Actor, audit
from tenants.context import tenant_context
from tenants.models import Tenant

logger = logging.getLogger(__name__)

TASK_NAME = "audiences.tasks.run_destination"
MIN_INTERVAL_MINUTES = 15
MAX_INTERVAL_MINUTES = 31 * 24 * 60
MIN_SECRET_LENGTH = 16
# A running export whose worker has said nothing for this long has lost it: another may take over.
STALE_CLAIM = dt.timedelta(minutes=30)
INTERRUPTED = "The download was interrupted before the file was complete."
# A download still "running" after this long ended without saying so: the web process that streamed
# it was killed (a closed connection is recorded at once). The biggest files stream in minutes.
ABANDONED_DOWNLOAD = dt.timedelta(hours=1)
ABANDONED = "The download stopped before the file was complete (the web process serving it ended)."
IN_FLIGHT = (AudienceExport.Status.PENDING, AudienceExport.Status.RUNNING, AudienceExport.Status.RETRYING)


def definition_of(segment: Segment) -> dict[str, Any]:
    return {"kind": segment.kind, "rules": segment.rules if segment.is_dynamic else {}}


def definition_hash(definition: Mapping[str, Any]) -> str:
    """SHA-256 of the definition as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- destinations -----------------------------------------------------------------------------------
def _allowed_private(host: str, port: int) -> bool:
    name = f"[{host}]" if ":" in host else host
    allowed = {entry.strip().lower() for entry in getattr(settings, "OUTBOUND_HTTP_ALLOWED_HOSTS", ())}
    return f"{name.lower()}:{port}" in allowed


def url_errors(url: str) -> list[str]:
    """Why a destination URL is refused: not HTTPS, credentials in it, or a private address written out.

    Names are resolved (and every address checked) when the push connects, after each redirect too
    (campaigns/channels/http.py); this catches what can be seen before. Plain http is allowed only for
    the development hosts in OUTBOUND_HTTP_ALLOWED_HOSTS.
    """
    try:
        URLValidator(schemes=["http", "https"])(url)
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    except (ValidationError, ValueError):
        return ["Enter a valid URL, e.g. https://hooks.example.com/audiences."]
    allowed = _allowed_private(host, port)
    if parts.scheme != "https" and not allowed:
        return ["Use an https:// URL: the file holds (hashed) customer data."]
    if parts.username or parts.password:
        return ["Leave credentials out of the URL: requests are signed with the secret."]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            return [] if allowed else ["This host is not a public internet address."]
        return []
    if not allowed and not is_public_address(address):
        return ["This host is not a public internet address (private, loopback, link-local or reserved)."]
    return []


def _clean_destination(
    *, tenant: Tenant, data: Mapping[str, Any], instance: AudienceDestination | None
) -> dict[str, Any]:
    """Check a destination's values as a whole; raise ValidationError with a message per field."""
    current: dict[str, Any] = {}
    if instance is not None:
        current = {
            "name": instance.name, "segment": instance.segment, "kind": instance.kind, "format": instance.format,
            "url": instance.url, "schedule": instance.schedule, "interval_minutes": instance.interval_minutes,
            "crontab": instance.crontab, "enabled": instance.enabled,
        }  # fmt: skip
    values = {**current, **{key: value for key, value in data.items() if key != "secret"}}
    errors: dict[str, list[str]] = {}
    name = str(values.get("name") or "").strip()
    if not name:
        errors["name"] = ["Give the destination a name."]
    elif len(name) > 120:
        errors["name"] = ["At most 120 characters."]
    elif (
        AudienceDestination.objects.filter(tenant_id=tenant.pk, name=name)
        .exclude(pk=instance.pk if instance else None)
        .exists()
    ):
        errors["name"] = ["Another destination has this name."]
    segment = values.get("segment")
    if isinstance(segment, int):
        segment = Segment.objects.filter(tenant_id=tenant.pk, pk=segment).first()
    if not isinstance(segment, Segment) or segment.tenant_id != tenant.pk:
        errors["segment"] = ["Choose a segment of this workspace."]
    if values.get("kind", ExportKind.AUDIENCE) not in ExportKind.values:
        errors["kind"] = [f"One of {', '.join(ExportKind.values)}."]
    if values.get("format", AudienceFormat.GOOGLE) not in AudienceFormat.values:
        errors["format"] = [f"One of {', '.join(AudienceFormat.values)}."]
    url = str(values.get("url") or "").strip()
    if not url:
        errors["url"] = ["Enter the URL that receives the file."]
    elif len(url) > 500:
        errors["url"] = ["At most 500 characters."]
    elif problems := url_errors(url):
        errors["url"] = problems
    secret = data.get("secret")
    if secret or instance is None:
        secret = str(secret or "")
        if len(secret) < MIN_SECRET_LENGTH:
            errors["secret"] = [f"A signing secret of at least {MIN_SECRET_LENGTH} characters."]
        elif len(secret) > 500:
            errors["secret"] = ["At most 500 characters."]
    schedule = values.get("schedule") or AudienceDestination.Schedule.INTERVAL
    interval = values.get("interval_minutes")
    crontab = str(values.get("crontab") or "").strip()
    if schedule == AudienceDestination.Schedule.INTERVAL:
        if not isinstance(interval, int) or isinstance(interval, bool):
            errors["interval_minutes"] = ["Every how many minutes (a whole number)."]
        elif not MIN_INTERVAL_MINUTES <= interval <= MAX_INTERVAL_MINUTES:
            errors["interval_minutes"] = [
                f"Between {MIN_INTERVAL_MINUTES} minutes and {MAX_INTERVAL_MINUTES // 1440} days."
            ]
        crontab = ""
    elif schedule == AudienceDestination.Schedule.CRONTAB:
        try:
            crontab_fields(crontab)
        except ValidationError as error:
            errors.update({key: list(messages) for key, messages in error.message_dict.items()})
        interval = None
    else:
        errors["schedule"] = [f"One of {', '.join(AudienceDestination.Schedule.values)}."]
    if errors:
        raise ValidationError(errors)
    cleaned = {
        "name": name, "segment": segment, "kind": values.get("kind", ExportKind.AUDIENCE),
        "format": values.get("format", AudienceFormat.GOOGLE), "url": url, "schedule": schedule,
        "interval_minutes": interval, "crontab": " ".join(crontab.split()),
        "enabled": bool(values.get("enabled", True)),
    }  # fmt: skip
    if secret:
        cleaned["secret"] = secret
    return cleaned


@transaction.atomic
def destination_create(*, tenant: Tenant, actor: Actor, data: Mapping[str, Any]) -> AudienceDestination:
    """Create a destination and its beat row."""
    cleaned = _clean_destination(tenant=tenant, data=data, instance=None)
    destination = AudienceDestination.objects.create(tenant=tenant, created_by=actor.user, **cleaned)
    destination_schedule_sync(destination=destination)
    audit(tenant=tenant, actor=actor, action="audience.destination_created", obj=destination,
          data={"segment_id": destination.segment_id, "format": destination.format})  # fmt: skip
    return destination


@transaction.atomic
def destination_update(
    *, destination: AudienceDestination, actor: Actor, data: Mapping[str, Any]
) -> AudienceDestination:
    """Change a destination (an empty or missing secret keeps the stored one) and its beat row."""
    locked = AudienceDestination.objects.select_for_update().get(pk=destination.pk)
    cleaned = _clean_destination(tenant=destination.tenant, data=data, instance=locked)
    for key, value in cleaned.items():
        setattr(locked, key, value)
    locked.save()
    destination_schedule_sync(destination=locked)
    changed = {"fields": sorted(key for key in data if key != "secret"), "secret_changed": "secret" in cleaned}
    audit(tenant=destination.tenant, actor=actor, action="audience.destination_updated", obj=locked, data=changed)
    return locked


@transaction.atomic
def destination_delete(*, destination: AudienceDestination, actor: Actor) -> None:
    """Delete a destination and its beat row; its exports stay on record."""
    destination_schedule_remove(destination=destination)
    audit(tenant=destination.tenant, actor=actor, action="audience.destination_deleted", obj=destination,
          data={"name": destination.name})  # fmt: skip
    destination.delete()


# --- the beat row -------------------------------------------------------------------------------------
def periodic_task_name(destination: AudienceDestination) -> str:
    return f"audience destination {destination.tenant_id}:{destination.pk}"


def destination_schedule_sync(*, destination: AudienceDestination) -> PeriodicTask:
    """Create or update the destination's PeriodicTask (interval or crontab in the workspace's zone).

    Schedule rows may be shared with other tasks, so they are never edited: a changed schedule points
    the task at another row, and a row no task uses any more is deleted.
    """
    task = (
        PeriodicTask.objects.filter(pk=destination.periodic_task_id).first() if destination.periodic_task_id else None
    )
    task = task or PeriodicTask.objects.filter(name=periodic_task_name(destination)).first() or PeriodicTask()
    old = (task.interval_id, task.crontab_id)
    interval: IntervalSchedule | None = None
    cron: CrontabSchedule | None = None
    if destination.schedule == AudienceDestination.Schedule.CRONTAB:
        minute, hour, day_of_month, month, day_of_week = crontab_fields(destination.crontab)
        fields = {"minute": minute, "hour": hour, "day_of_month": day_of_month, "month_of_year": month,
                  "day_of_week": day_of_week, "timezone": str(tenant_zone(destination.tenant))}  # fmt: skip
        cron = CrontabSchedule.objects.filter(**fields).order_by("pk").first() or CrontabSchedule.objects.create(
            **fields
        )
    else:
        every = int(destination.interval_minutes or MIN_INTERVAL_MINUTES)
        interval = IntervalSchedule.objects.filter(every=every, period=IntervalSchedule.MINUTES).order_by(
            "pk"
        ).first() or IntervalSchedule.objects.create(every=every, period=IntervalSchedule.MINUTES)
    task.name = periodic_task_name(destination)
    task.task = TASK_NAME
    task.args = json.dumps([destination.tenant_id, destination.pk])
    task.kwargs = "{}"
    task.interval, task.crontab, task.clocked, task.solar = interval, cron, None, None
    task.one_off = False
    task.enabled = destination.enabled
    task.description = f"Ad audience “{destination.name}” ({destination.get_format_display()})"
    task.save()  # through save(): beat is told that its schedule changed
    if destination.periodic_task_id != task.pk:
        AudienceDestination.objects.filter(pk=destination.pk).update(periodic_task=task)
        destination.periodic_task = task
    if old != (task.interval_id, task.crontab_id):
        _drop_unused(*old)
    return task


def _drop_unused(interval_id: int | None, crontab_id: int | None) -> None:
    """Delete schedule rows no task uses any more (only those: the delete would cascade to tasks)."""
    if interval_id:
        IntervalSchedule.objects.filter(pk=interval_id, periodictask__isnull=True).delete()
    if crontab_id:
        CrontabSchedule.objects.filter(pk=crontab_id, periodictask__isnull=True).delete()


def destination_schedule_remove(*, destination: AudienceDestination) -> None:
    tasks = PeriodicTask.objects.filter(
        Q(name=periodic_task_name(destination)) | Q(pk=destination.periodic_task_id or 0)
    )
    for task in tasks:
        schedule = (task.interval_id, task.crontab_id)
        task.delete()
        _drop_unused(*schedule)


def next_run(destination: AudienceDestination, now: dt.datetime | None = None) -> dt.datetime | None:
    """When the destination's export runs next (for the pages), or None when it is off."""
    from campaigns.scheduling import following_occurrence

    now = now or timezone.now()
    if not destination.enabled:
        return None
    if destination.schedule == AudienceDestination.Schedule.CRONTAB:
        try:
            return following_occurrence(destination.crontab, after=now, zone=tenant_zone(destination.tenant))
        except ValidationError:
            return None
    task = destination.periodic_task
    minutes = dt.timedelta(minutes=destination.interval_minutes or MIN_INTERVAL_MINUTES)
    if task is None or task.last_run_at is None:
        return now
    return max(now, task.last_run_at + minutes)


# --- export records ---------------------------------------------------------------------------------
@transaction.atomic
def export_start(
    *,
    segment: Segment,
    format: str,
    kind: str,
    actor: Actor,
    trigger: str,
    destination: AudienceDestination | None = None,
) -> AudienceExport:
    """Record an export of the segment as it is now (version, membership version, definition)."""
    if format not in AudienceFormat.values:
        raise ValidationError({"format": [f"One of {', '.join(AudienceFormat.values)}."]})
    if kind not in ExportKind.values:
        raise ValidationError({"kind": [f"One of {', '.join(ExportKind.values)}."]})
    download = destination is None
    definition = definition_of(segment)
    export = AudienceExport.objects.create(
        tenant_id=segment.tenant_id, segment=segment, destination=destination, segment_name=segment.name,
        segment_version=segment.version, membership_version=segment.materialized_version if segment.is_dynamic
        else segment.version, membership_refreshed_at=segment.refreshed_at, definition=definition,
        definition_hash=definition_hash(definition), kind=kind, format=format,
        delivery=AudienceExport.Delivery.DOWNLOAD if download else AudienceExport.Delivery.PUSH,
        trigger=trigger, requested_by=actor.label[:200], consent_purpose=ADVERTISING_PURPOSE,
        status=AudienceExport.Status.RUNNING if download else AudienceExport.Status.PENDING,
        started_at=timezone.now() if download else None,
    )  # fmt: skip
    audit(
        tenant=segment.tenant, actor=actor, action="audience.exported" if download else "audience.push_requested",
        obj=export, data={"segment_id": segment.pk, "format": format, "kind": kind,
                          "destination_id": destination.pk if destination else None},
    )  # fmt: skip
    return export


def _finish(export_id: int, audience: AudienceFile, **extra: Any) -> None:
    AudienceExport.objects.filter(pk=export_id).update(
        member_count=audience.members, row_count=audience.rows, excluded=audience.excluded_counts(),
        file_sha256=audience.sha256, file_bytes=audience.size, **extra,
    )  # fmt: skip


def _fail(export_id: int, error: str, *, only_in_flight: bool = True) -> None:
    exports = AudienceExport.objects.filter(pk=export_id)
    if only_in_flight:
        exports = exports.filter(status__in=IN_FLIGHT)
    exports.update(status=AudienceExport.Status.FAILED, error=error[:2000], finished_at=timezone.now())


class DownloadStream:
    """The file of a download as text chunks, recording how it ended (a StreamingHttpResponse calls close()).

    Read in one transaction through a server-side cursor, so the file is one consistent snapshot of
    the membership and nothing but one batch of rows is ever in memory. Each chunk is read under the
    export's tenant: the stream runs after the request's middleware has returned.
    """

    def __init__(self, export: AudienceExport) -> None:
        self.export_id, self.tenant_id = export.pk, export.tenant_id
        self.segment_id, self.purpose = export.segment_id, export.consent_purpose
        self.file = audience_file(export.format)
        self.done = False
        self._chunks = self._generate()

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def _generate(self) -> Generator[str, None, None]:
        # The tenant is in scope only while rows are read, never across a yield: the caller's context
        # (the WSGI thread between two chunks) must not keep it.
        try:
            with transaction.atomic():
                assert self.segment_id is not None
                batches = member_rows(tenant_id=self.tenant_id, segment_id=self.segment_id, purpose=self.purpose)
                try:
                    yield self.file.header()
                    while True:
                        with tenant_context(self.tenant_id):
                            rows = next(batches, None)
                        if rows is None:
                            break
                        text = self.file.lines(rows)
                        if text:
                            yield text
                finally:
                    with tenant_context(self.tenant_id):
                        batches.close()
        except GeneratorExit:
            raise
        except Exception as error:
            logger.exception("audience.download_failed", extra={"tenant_id": self.tenant_id, "export": self.export_id})
            with tenant_context(self.tenant_id):
                _fail(self.export_id, f"The export failed: {type(error).__name__}.")
            raise
        with tenant_context(self.tenant_id):
            _finish(self.export_id, self.file, status=AudienceExport.Status.SUCCEEDED, finished_at=timezone.now())
        self.done = True

    def close(self) -> None:
        self._chunks.close()
        if not self.done:
            with tenant_context(self.tenant_id):
                _fail(self.export_id, INTERRUPTED)


def download_stream(*, export: AudienceExport) -> DownloadStream:
    return DownloadStream(export)


def downloads_close_abandoned(*, tenant_id: int) -> int:
    """Record the tenant's downloads whose web process died mid-stream as failed; return how many."""
    return AudienceExport.objects.filter(
        tenant_id=tenant_id, delivery=AudienceExport.Delivery.DOWNLOAD, status=AudienceExport.Status.RUNNING,
        started_at__lt=timezone.now() - ABANDONED_DOWNLOAD,
    ).update(status=AudienceExport.Status.FAILED, error=ABANDONED, finished_at=timezone.now())  # fmt: skip


# --- pushes -----------------------------------------------------------------------------------------
def destination_run(*, destination: AudienceDestination, actor: Actor, trigger: str) -> AudienceExport:
    """Record an export to the destination (one at a time per destination); the caller pushes it."""
    running = (
        AudienceExport.objects.filter(tenant_id=destination.tenant_id, destination=destination, status__in=IN_FLIGHT)
        .order_by("-id")
        .first()
    )
    if running is not None and _stale(running):
        # Its worker was lost (the claim is old): this export takes over, that one is closed.
        _fail(running.pk, "The worker stopped while exporting; a later export replaced this one.")
        _drop_file(running)
    elif running is not None:
        raise ValidationError(
            f"Export #{running.pk} to this destination is still {running.get_status_display().lower()}."
        )
    return export_start(
        segment=destination.segment, format=destination.format, kind=destination.kind, actor=actor, trigger=trigger,
        destination=destination,
    )  # fmt: skip


def _stale(export: AudienceExport) -> bool:
    return export.status == AudienceExport.Status.RUNNING and (
        export.claimed_at is None or export.claimed_at < timezone.now() - STALE_CLAIM
    )


@transaction.atomic
def destination_run_now(*, destination: AudienceDestination, actor: Actor) -> AudienceExport:
    """Queue an export to the destination now (pushed by a worker after commit)."""
    from audiences.tasks import push_export

    export = destination_run(destination=destination, actor=actor, trigger=AudienceExport.Trigger.MANUAL)
    tenant_id, export_id = export.tenant_id, export.pk
    transaction.on_commit(lambda: push_export.delay(tenant_id, export_id))
    return export


def _claim(export: AudienceExport) -> bool:
    """Take the export for this worker: queued, waiting to retry, or running with a lost worker."""
    now = timezone.now()
    claimable = Q(status__in=[AudienceExport.Status.PENDING, AudienceExport.Status.RETRYING]) | Q(
        status=AudienceExport.Status.RUNNING, claimed_at__lt=now - STALE_CLAIM
    )
    claimed = (
        AudienceExport.objects.filter(claimable, pk=export.pk)
        .update(status=AudienceExport.Status.RUNNING, claimed_at=now, attempts=F("attempts") + 1)
    )  # fmt: skip
    if claimed:
        AudienceExport.objects.filter(pk=export.pk, started_at__isnull=True).update(started_at=now)
    return claimed == 1


def export_build_file(*, export: AudienceExport) -> AudienceExport:
    """Write the export's file to storage (once: a retry pushes the same file) and record its figures."""
    if export.file:
        return export
    assert export.segment_id is not None
    file = audience_file(export.format)
    with tempfile.TemporaryFile() as out:
        with transaction.atomic():
            out.write(file.header().encode())
            for rows in member_rows(
                tenant_id=export.tenant_id, segment_id=export.segment_id, purpose=export.consent_purpose
            ):
                out.write(file.lines(rows).encode())
        out.seek(0)
        name = default_storage.save(f"audiences/{export.tenant_id}/{export.pk}-{secrets.token_hex(8)}.csv", File(out))
    _finish(export.pk, file, file=name, parts_total=push.parts_for(file.rows))
    export.refresh_from_db()
    return export


def _drop_file(export: AudienceExport) -> None:
    """Delete the stored file once the push settled: it holds hashed personal data."""
    if export.file:
        default_storage.delete(export.file.name)
        AudienceExport.objects.filter(pk=export.pk).update(file="")


def retry_delay(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next attempt: exponential from AUDIENCE_PUSH_RETRY_BASE_SECONDS, at most an hour."""
    base = float(getattr(settings, "AUDIENCE_PUSH_RETRY_BASE_SECONDS", 60))
    delay = min(base * 2 ** max(attempts - 1, 0), 3600.0)
    return max(delay, retry_after or 0.0)


def max_attempts() -> int:
    return int(getattr(settings, "AUDIENCE_PUSH_MAX_ATTEMPTS", 6))


def export_push(*, export: AudienceExport, http: OutboundHttp | None = None) -> AudienceExport:
    """Build (once) and push the export's file part by part; on a transient failure schedule a retry.

    Each sent part is recorded at once, so a retry (or another worker after a crash) resumes at the
    first part not sent. A refused destination or a 4xx answer fails the export for good.
    """
    from audiences.tasks import push_export

    if not _claim(export):
        export.refresh_from_db()
        return export
    export.refresh_from_db()
    destination = export.destination
    if destination is None or export.segment_id is None:
        _fail(export.pk, f"The {'destination' if destination is None else 'segment'} was deleted.")
        _drop_file(export)
        export.refresh_from_db()
        return export
    try:
        export = export_build_file(export=export)
    except Exception as error:
        logger.exception("audience.build_failed", extra={"tenant_id": export.tenant_id, "export": export.pk})
        _fail(export.pk, f"The export failed: {type(error).__name__}.")
        export.refresh_from_db()
        return export
    answer: push.PartAnswer | None = None
    with (
        http or OutboundHttp(timeouts=push.PUSH_TIMEOUTS) as session,
        default_storage.open(export.file.name, "rb") as stream,
    ):
        for offset, body in enumerate(push.file_parts(stream, skip_parts=export.parts_sent)):
            number = export.parts_sent + 1
            answer = push.push_part(
                session, export=export, url=destination.url, secret=destination.secret, body=body,
                number=number, total=export.parts_total,
            )  # fmt: skip
            if not answer.sent:
                break
            AudienceExport.objects.filter(pk=export.pk).update(parts_sent=number, error="")
            export.parts_sent = number
            logger.info("audience.part_sent", extra={"tenant_id": export.tenant_id, "export": export.pk,
                                                      "part": number, "offset": offset})  # fmt: skip
    if answer is None or answer.sent:
        AudienceExport.objects.filter(pk=export.pk).update(
            status=AudienceExport.Status.SUCCEEDED, finished_at=timezone.now(), next_attempt_at=None, error=""
        )
        _drop_file(export)
    elif answer.transient and export.attempts < max_attempts():
        delay = retry_delay(export.attempts, answer.result.retry_after)
        AudienceExport.objects.filter(pk=export.pk).update(
            status=AudienceExport.Status.RETRYING, error=answer.result.error[:2000],
            next_attempt_at=timezone.now() + dt.timedelta(seconds=delay),
        )  # fmt: skip
        tenant_id, export_id = export.tenant_id, export.pk
        transaction.on_commit(lambda: push_export.apply_async((tenant_id, export_id), countdown=delay))
    else:
        tries = f" after {export.attempts} attempts" if answer.transient else ""
        _fail(export.pk, f"{answer.result.error}{tries}", only_in_flight=False)
        _drop_file(export)
    export.refresh_from_db()
    return export


def destination_scheduled_run(
    *, destination: AudienceDestination, http: OutboundHttp | None = None
) -> AudienceExport | None:
    """Beat: export to the destination now, unless it is off or its previous export is still in flight."""
    if not destination.enabled:
        return None
    try:
        export = destination_run(
            destination=destination, actor=Actor.system("schedule"), trigger=AudienceExport.Trigger.SCHEDULE
        )
    except ValidationError as busy:
        extra = {"tenant_id": destination.tenant_id, "destination": destination.pk, "reason": busy.messages[0]}
        logger.info("audience.schedule_skipped", extra=extra)
        return None
    return export_push(export=export, http=http)
