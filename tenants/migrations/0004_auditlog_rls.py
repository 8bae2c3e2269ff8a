from django.db import migrations

from tenants.rls import EnableTenantRLS


class Migration(migrations.Migration):
    dependencies = [("tenants", "0003_tenant_auto_define_attributes_and_more")]

    operations = [EnableTenantRLS("auditlog")]
