"""Event window summaries for segment counts (issue 4; contacts/summaries.py, bench/RESULTS.md).

``EventWindowSummary``: per contact and summarised event name, the rollups of the last 7 … 365
days added up (counts, revenue in cents) and the newest day; ``EventSummaryState``: the day they
are counted for, per tenant. Both are tenant-owned (row-level security). The summary's contact is a
foreign key without a database constraint (Django still cascades; a refresh rebuilds from the
rollups): a constraint trigger per row would be most of the cost of a rebuild. The summary table
keeps a fifth of each page free: ingest then updates a row's counts in place (HOT, no new index
entries), measured at half the cost of its upserts on bench-1m.
"""

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

from tenants.rls import EnableTenantRLS, RunSQLOnPostgreSQL


def _managers() -> list:
    return [("objects", django.db.models.manager.Manager()), ("all_tenants", django.db.models.manager.Manager())]


def _tenant() -> models.ForeignKey:
    return models.ForeignKey(
        db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="tenants.tenant"
    )


WINDOWS = (7, 14, 30, 60, 90, 180, 365)
FILLFACTOR = "ALTER TABLE contacts_eventwindowsummary SET (fillfactor = 80)"
RESET_FILLFACTOR = "ALTER TABLE contacts_eventwindowsummary RESET (fillfactor)"


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0005_segments_indexes"),
        ("tenants", "0006_tenant_index_from_composites"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventSummaryState",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("day", models.DateField()),
                ("names", models.JSONField(default=list)),
                ("rebuilt_at", models.DateTimeField()),
                ("refreshed_at", models.DateTimeField()),
                ("tenant", _tenant()),
            ],
            options={
                "abstract": False,
                "base_manager_name": "all_tenants",
                "constraints": [models.UniqueConstraint(fields=("tenant",), name="event_summary_state_unique_tenant")],
            },
            managers=_managers(),
        ),
        migrations.CreateModel(
            name="EventWindowSummary",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("last_day", models.DateField()),
                *[(f"count_{days}", models.IntegerField(default=0)) for days in WINDOWS],
                *[(f"revenue_{days}", models.BigIntegerField(default=0)) for days in WINDOWS],
                (
                    "contact",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="contacts.contact",
                    ),
                ),
                ("tenant", _tenant()),
            ],
            options={
                "abstract": False,
                "base_manager_name": "all_tenants",
                "constraints": [
                    models.UniqueConstraint(fields=("tenant", "name", "contact"), name="event_summary_unique_contact")
                ],
            },
            managers=_managers(),
        ),
        EnableTenantRLS("eventsummarystate"),
        EnableTenantRLS("eventwindowsummary"),
        RunSQLOnPostgreSQL(FILLFACTOR, RESET_FILLFACTOR),
    ]
