# Send-time optimisation: each contact's best hour of the week and the tenant's baseline.

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

from tenants.rls import EnableTenantRLS


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0001_initial"),
        ("contacts", "0005_segments_indexes"),
        ("tenants", "0006_tenant_index_from_composites"),
    ]

    operations = [
        migrations.CreateModel(
            name="SendTimeBaseline",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("hour_counts", models.JSONField(default=list)),
                ("best_hour_of_week", models.PositiveSmallIntegerField()),
                ("events_counted", models.PositiveIntegerField(default=0)),
                ("contacts_profiled", models.PositiveIntegerField(default=0)),
                ("computed_at", models.DateTimeField()),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "abstract": False,
                "base_manager_name": "all_tenants",
                "constraints": [models.UniqueConstraint(fields=("tenant",), name="send_time_baseline_unique_tenant")],
            },
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        migrations.CreateModel(
            name="SendTimeProfile",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("best_hour_of_week", models.PositiveSmallIntegerField()),
                ("confidence", models.FloatField(default=0)),
                ("events_counted", models.PositiveIntegerField(default=0)),
                ("computed_at", models.DateTimeField()),
                (
                    "contact",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="contacts.contact",
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "abstract": False,
                "base_manager_name": "all_tenants",
                "constraints": [
                    models.UniqueConstraint(fields=("tenant", "contact"), name="send_time_profile_unique_contact")
                ],
            },
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        EnableTenantRLS("SendTimeBaseline"),
        EnableTenantRLS("SendTimeProfile"),
    ]
