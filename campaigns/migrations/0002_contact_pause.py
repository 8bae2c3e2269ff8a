import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

from tenants.rls import EnableTenantRLS


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0001_initial"),
        ("contacts", "0003_tenant_index_from_composites"),
        ("tenants", "0006_tenant_index_from_composites"),
    ]

    operations = [
        migrations.CreateModel(
            name="ContactPause",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("until", models.DateTimeField()),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "contact",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="contacts.contact"
                    ),
                ),
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
                "constraints": [
                    models.UniqueConstraint(fields=("tenant", "contact"), name="contact_pause_unique_contact")
                ],
            },
            managers=[
                ("objects", django.db.models.manager.Manager()),
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        EnableTenantRLS("contactpause"),
    ]
