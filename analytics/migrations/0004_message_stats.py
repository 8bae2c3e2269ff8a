# Message figures: per-delivery outcomes, daily campaign figures, run tallies, figures by lifecycle stage
# and the refresh cursors (analytics/rollup.py).

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

from tenants.rls import EnableTenantRLS


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0003_experiment"),
        ("contacts", "0005_segments_indexes"),
        ("tenants", "0006_tenant_index_from_composites"),
    ]

    operations = [
        migrations.CreateModel(
            name="StatsSweep",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("checkpoints", models.JSONField(default=list)),
                ("swept_at", models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name="CampaignDayStats",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("campaign_id", models.BigIntegerField()),
                ("variant_id", models.BigIntegerField(default=0, help_text="0: deliveries without a variant.")),
                ("day", models.DateField()),
                ("sent", models.IntegerField(default=0)),
                ("bounced", models.IntegerField(default=0)),
                ("opened", models.IntegerField(default=0)),
                ("opened_any", models.IntegerField(default=0)),
                ("clicked", models.IntegerField(default=0)),
                ("clicks", models.IntegerField(default=0)),
                ("engaged", models.IntegerField(default=0)),
                ("unsubscribed", models.IntegerField(default=0)),
                ("complained", models.IntegerField(default=0)),
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
                "indexes": [models.Index(fields=["tenant", "day"], name="campaign_day_by_day")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant", "campaign_id", "variant_id", "day"), name="campaign_day_unique"
                    )
                ],
            },
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        migrations.CreateModel(
            name="CampaignStageStats",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("campaign_id", models.BigIntegerField()),
                ("stage", models.CharField(blank=True, help_text="Blank: the contact is gone.", max_length=20)),
                ("sent", models.IntegerField(default=0)),
                ("bounced", models.IntegerField(default=0)),
                ("opened", models.IntegerField(default=0)),
                ("opened_any", models.IntegerField(default=0)),
                ("clicked", models.IntegerField(default=0)),
                ("clicks", models.IntegerField(default=0)),
                ("engaged", models.IntegerField(default=0)),
                ("unsubscribed", models.IntegerField(default=0)),
                ("complained", models.IntegerField(default=0)),
                ("conversions", models.IntegerField(default=0)),
                ("revenue", models.DecimalField(decimal_places=2, default=0, max_digits=14)),
                ("computed_at", models.DateTimeField()),
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
                "indexes": [models.Index(fields=["tenant", "computed_at"], name="campaign_stage_computed")],
                "constraints": [
                    models.UniqueConstraint(fields=("tenant", "campaign_id", "stage"), name="campaign_stage_unique")
                ],
            },
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        migrations.CreateModel(
            name="DeliveryOutcome",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("delivery_id", models.BigIntegerField()),
                ("campaign_id", models.BigIntegerField()),
                ("variant_id", models.BigIntegerField(default=0, help_text="0: the delivery had no variant.")),
                ("opened_at", models.DateTimeField(blank=True, null=True)),
                (
                    "opened_any_at",
                    models.DateTimeField(blank=True, help_text="First open by anyone, machines too.", null=True),
                ),
                ("clicked_at", models.DateTimeField(blank=True, null=True)),
                ("clicks", models.PositiveIntegerField(default=0)),
                (
                    "engaged_at",
                    models.DateTimeField(blank=True, help_text="First open or click by a person.", null=True),
                ),
                ("bounced_at", models.DateTimeField(blank=True, null=True)),
                ("complained_at", models.DateTimeField(blank=True, null=True)),
                ("unsubscribed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "contact",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
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
                "indexes": [models.Index(fields=["tenant", "campaign_id"], name="delivery_outcome_campaign")],
                "constraints": [
                    models.UniqueConstraint(fields=("tenant", "delivery_id"), name="delivery_outcome_unique_delivery")
                ],
            },
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        migrations.CreateModel(
            name="RunTally",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("run_id", models.BigIntegerField()),
                ("campaign_id", models.BigIntegerField()),
                ("counts", models.JSONField(default=list)),
                ("settled", models.BooleanField(default=False)),
                ("counted_at", models.DateTimeField()),
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
                "indexes": [
                    models.Index(
                        condition=models.Q(("settled", False)), fields=["tenant", "run_id"], name="run_tally_open"
                    )
                ],
                "constraints": [models.UniqueConstraint(fields=("tenant", "run_id"), name="run_tally_unique_run")],
            },
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        migrations.CreateModel(
            name="StatsCursor",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("checkpoints", models.JSONField(default=list)),
                ("pending", models.JSONField(blank=True, null=True)),
                ("stages_due", models.JSONField(blank=True, default=list)),
                ("refreshed_at", models.DateTimeField(blank=True, null=True)),
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
                "constraints": [models.UniqueConstraint(fields=("tenant",), name="stats_cursor_unique_tenant")],
            },
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        EnableTenantRLS("DeliveryOutcome"),
        EnableTenantRLS("CampaignDayStats"),
        EnableTenantRLS("CampaignStageStats"),
        EnableTenantRLS("RunTally"),
        EnableTenantRLS("StatsCursor"),
    ]
