# Preferred channel: each contact's engagement score per channel (analytics/preferred_channel.py).

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

from tenants.rls import EnableTenantRLS


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0005_experiment_channels"),
        ("contacts", "0006_event_window_summaries"),
        ("tenants", "0007_policy_once_per_statement"),
    ]

    operations = [
        migrations.CreateModel(
            name="ChannelProfile",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("email_score", models.FloatField(default=0)),
                ("sms_score", models.FloatField(default=0)),
                ("push_score", models.FloatField(default=0)),
                ("best_channel", models.CharField(blank=True, max_length=10)),
                ("messages_counted", models.PositiveIntegerField(default=0)),
                ("engagements_counted", models.PositiveIntegerField(default=0)),
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
                    models.UniqueConstraint(fields=("tenant", "contact"), name="channel_profile_unique_contact")
                ],
            },
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        EnableTenantRLS("ChannelProfile"),
    ]
