"""Who is in an audience file, what the export records, and the lookalike seed's summary."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from django.db import transaction

from audiences.models import AudienceExport
from audiences.selectors import (
    ADVERTISING_PURPOSE,
    lookalike_summary_compute,
    member_rows,
    member_rows_generic,
)
from audiences.services import definition_hash, download_stream, export_start
from contacts.consent import consent_change, suppression_add
from contacts.privacy import contact_erase
from segments.models import Segment
from segments.services import segment_create, segment_refresh, segment_update
from tenants.context import tenant_context
from tests.audiences.helpers import ACTOR, API, parse_csv, person, segment_of
from tests.audiences.test_formats import SHA

pytestmark = pytest.mark.django_db


def download(segment: Segment, fmt: str = "google", kind: str = "audience") -> tuple[AudienceExport, str]:
    export = export_start(segment=segment, format=fmt, kind=kind, actor=ACTOR, trigger="download")
    text = "".join(download_stream(export=export))
    export.refresh_from_db()
    return export, text


@pytest.fixture
def crowd(shop):
    """One of each case; the comment says what the file must do with them."""
    people = {
        # both identifiers consented: both exported
        "ada": person(shop, email="ada.lovelace@example.com", phone="+4915112345678", first_name="Ada",
                      last_name="Lovelace", country="DE", postal_code="10115"),
        # consent for marketing, not advertising: left out (no consent)
        "bob": person(shop, email="bob@example.com", purpose="marketing"),
        # email consented, phone not: the email only
        "cy": person(shop, consent=("email",), email="cy@example.com", phone="+12025550143"),
        # consented but unsubscribed (suppressed by hash): left out (suppressed)
        "dee": person(shop, consent=("email",), email="dee@example.com"),
        # erased after consenting: left out (erased)
        "eve": person(shop, email="eve@example.com", phone="+4915100000001"),
        # nothing to match by: left out (no identifier)
        "fay": person(shop, consent=(), first_name="Fay"),
        # granted, then withdrew: left out (no consent)
        "gus": person(shop, consent=("email",), email="gus@example.com"),
        # WhatsApp consent covers the phone
        "hal": person(shop, consent=("whatsapp",), phone="+4915100000002"),
        # SMS STOP suppresses the phone; the email stays
        "ivy": person(shop, email="ivy@example.com", phone="+4915100000003"),
    }  # fmt: skip
    suppression_add(tenant=shop, channel="email", address="dee@example.com", reason="unsubscribe")
    segment = segment_of(shop, list(people.values()))
    contact_erase(contact=people["eve"], actor=ACTOR)  # a member, erased since (static members stay)
    consent_change(contact=people["gus"], channel="email", purpose=ADVERTISING_PURPOSE, status="withdrawn",
                   evidence=API, actor=ACTOR)  # fmt: skip
    suppression_add(tenant=shop, channel="sms", address="+4915100000003", reason="unsubscribe")
    return segment


def test_the_file_holds_only_consented_unsuppressed_living_identifiers(shop, crowd):
    segment = crowd
    export, text = download(segment, "google")
    rows = parse_csv(text)
    assert rows[0] == ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"]
    ivy_email = hashlib.sha256(b"ivy@example.com").hexdigest()
    cy_email = hashlib.sha256(b"cy@example.com").hexdigest()
    hal_phone = hashlib.sha256(b"+4915100000002").hexdigest()
    assert rows[1:] == [
        [SHA["ada.lovelace@example.com"], SHA["+4915112345678"], SHA["ada"], SHA["lovelace"], "DE", "10115"],
        [cy_email, "", "", "", "", ""],
        ["", hal_phone, "", "", "", ""],
        [ivy_email, "", "", "", "", ""],
    ]
    assert export.status == AudienceExport.Status.SUCCEEDED
    assert (export.member_count, export.row_count) == (9, 4)
    assert export.excluded == {"erased": 1, "no_identifier": 1, "no_consent": 2, "suppressed": 1}
    for address in ("bob@example.com", "dee@example.com", "gus@example.com", "eve@example.com", "+12025550143"):
        assert hashlib.sha256(address.encode()).hexdigest() not in text
        assert address not in text


def test_meta_file_of_the_same_segment(shop, crowd):
    segment = crowd
    export, text = download(segment, "meta")
    rows = parse_csv(text)
    assert rows[0] == ["email", "phone", "fn", "ln", "ct", "st", "zip", "country"]
    assert rows[1] == [
        SHA["ada.lovelace@example.com"], SHA["4915112345678"], SHA["ada"], SHA["lovelace"], "", "", SHA["10115"],
        SHA["de"],
    ]  # fmt: skip
    assert len(rows) == 5 and export.row_count == 4


def test_no_advertising_purpose_in_the_workspace_means_an_empty_file_not_an_error(world):
    tenant = world.tenant_b
    with tenant_context(tenant.id):
        ada = person(tenant, consent=(), email="ada@example.com")
        export, text = download(segment_of(tenant, [ada]))
    assert parse_csv(text) == [["Email", "Phone", "First Name", "Last Name", "Country", "Zip"]]
    assert export.excluded["no_consent"] == 1 and export.row_count == 0


def test_the_set_based_statement_and_the_generic_pages_agree(shop, crowd):
    segment = crowd
    with transaction.atomic():
        fast = list(itertools.chain.from_iterable(member_rows(tenant_id=shop.pk, segment_id=segment.pk)))
    slow = list(
        itertools.chain.from_iterable(
            member_rows_generic(tenant_id=shop.pk, segment_id=segment.pk, purpose=ADVERTISING_PURPOSE, page=3)
        )
    )
    assert [tuple(row) for row in fast] == [tuple(row) for row in slow]
    assert len(fast) == 9


def test_the_export_records_the_segment_version_definition_and_the_files_sha256(shop):
    ada = person(shop, email="ada.lovelace@example.com", country="DE")
    person(shop, email="zed@example.com", country="FR")
    rules = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}
    segment = segment_create(tenant=shop, actor=ACTOR, name="Germany", rules=rules)
    segment_refresh(segment=segment)
    segment.refresh_from_db()
    export, text = download(segment)
    assert export.row_count == 1 and SHA["ada.lovelace@example.com"] in text
    assert (export.segment_version, export.membership_version) == (1, 1)
    assert export.definition == {"kind": "dynamic", "rules": rules}
    assert export.definition_hash == definition_hash({"kind": "dynamic", "rules": rules})
    assert export.file_sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert export.file_bytes == len(text.encode())
    assert (export.segment_name, export.consent_purpose, export.requested_by) == ("Germany", "advertising", "test")
    assert export.started_at <= export.finished_at

    # New rules, members not refreshed yet: the export says which membership it is.
    segment = segment_update(segment=segment, actor=ACTOR, rules={"all": [{"type": "field", "field": "country",
                                                                           "op": "eq", "value": "FR"}]})  # fmt: skip
    later, later_text = download(segment)
    assert (later.segment_version, later.membership_version) == (2, 1)
    assert later.definition_hash != export.definition_hash
    assert later_text == text, "the materialised members of version 1, as the record says"
    assert ada.pk


def test_a_download_closed_half_way_is_recorded_as_failed(shop):
    people = [person(shop, email=f"p{i}@example.com") for i in range(3)]
    segment = segment_of(shop, people)
    export = export_start(segment=segment, format="google", kind="audience", actor=ACTOR, trigger="download")
    stream = download_stream(export=export)
    chunks = iter(stream)
    assert next(chunks).startswith("Email,")
    stream.close()
    export.refresh_from_db()
    assert export.status == AudienceExport.Status.FAILED
    assert "interrupted" in export.error


def test_a_download_never_started_is_recorded_as_failed_when_closed(shop):
    segment = segment_of(shop, [person(shop, email="p@example.com")])
    export = export_start(segment=segment, format="meta", kind="audience", actor=ACTOR, trigger="download")
    download_stream(export=export).close()
    export.refresh_from_db()
    assert export.status == AudienceExport.Status.FAILED


def test_a_download_whose_web_process_died_is_closed_by_the_sweep(shop):
    """A killed web process never calls close(): the export stays "running" until the sweep, which
    fails downloads running longer than an hour, and leaves fresh ones and pushes alone."""
    import datetime as dt

    from django.utils import timezone

    from audiences.tasks import close_abandoned_downloads

    segment = segment_of(shop, [person(shop, email="p@example.com")])
    abandoned, fresh = (
        export_start(segment=segment, format="google", kind="audience", actor=ACTOR, trigger="download")
        for _ in range(2)
    )
    AudienceExport.objects.filter(pk=abandoned.pk).update(started_at=timezone.now() - dt.timedelta(hours=2))
    assert close_abandoned_downloads(segment.tenant_id) == 1
    abandoned.refresh_from_db(), fresh.refresh_from_db()
    assert abandoned.status == AudienceExport.Status.FAILED and "web process" in abandoned.error
    assert abandoned.finished_at is not None
    assert fresh.status == AudienceExport.Status.RUNNING


def test_the_lookalike_summary_compares_the_seed_with_everyone(shop):
    from analytics.value import value_snapshot_forget

    best = [
        person(shop, email=f"vip{i}@example.com", country="DE", lifecycle_stage="loyal_advocate",
               interests=["tennis", "wine"], order_count=5, total_revenue=500)
        for i in range(4)
    ]  # fmt: skip
    rest = [
        person(shop, email=f"r{i}@example.com", country="FR" if i % 2 else "DE", lifecycle_stage="lead",
               interests=["wine"] if i < 2 else [])
        for i in range(6)
    ]  # fmt: skip
    seed = segment_of(shop, best, name="VIPs")
    value_snapshot_forget(tenant_id=shop.pk)
    summary = lookalike_summary_compute(segment=seed)
    assert (summary.seed_size, summary.audience_size) == (4, 10)
    [germany] = summary.countries
    assert (germany.value, germany.label, germany.seed, germany.overall) == ("DE", "Germany", 4, 7)
    assert germany.seed_share == 1.0 and germany.overall_share == pytest.approx(0.7)
    assert germany.lift == pytest.approx(1 / 0.7)
    stages = {share.value: (share.seed, share.overall) for share in summary.stages}
    assert stages == {"loyal_advocate": (4, 4), "lead": (0, 6)}
    interests = {share.value: (share.seed, share.overall) for share in summary.tags["Interests"]}
    assert interests == {"tennis": (4, 4), "wine": (4, 6)}
    value = {figure.label: (figure.seed, figure.overall) for figure in summary.value}
    assert value["Average order value"] == (100, 100)
    assert value["Revenue per contact"] == (500, 200)
    assert value["Buyers"] == (1.0, 0.4)
    assert rest
