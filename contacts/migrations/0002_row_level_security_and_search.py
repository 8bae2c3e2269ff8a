from django.db import migrations

from tenants.rls import EnableTenantRLS, RunSQLOnPostgreSQL

TENANT_MODELS = [
    "contact",
    "attributedefinition",
    "event",
    "eventdailyrollup",
    "lifecycletransition",
    "consentrecord",
    "consentstate",
    "suppression",
    "privacyrequest",
    "importjob",
]

# Prefix search on the contact list, tenant first so a million other contacts are never read.
SEARCH_INDEXES = """
CREATE INDEX contact_search_email ON contacts_contact (tenant_id, email varchar_pattern_ops);
CREATE INDEX contact_search_last_name ON contacts_contact (tenant_id, lower(last_name) varchar_pattern_ops);
CREATE INDEX contact_search_first_name ON contacts_contact (tenant_id, lower(first_name) varchar_pattern_ops);
CREATE INDEX contact_search_external_id ON contacts_contact (tenant_id, external_id varchar_pattern_ops);
"""
DROP_SEARCH_INDEXES = """
DROP INDEX IF EXISTS contact_search_email;
DROP INDEX IF EXISTS contact_search_last_name;
DROP INDEX IF EXISTS contact_search_first_name;
DROP INDEX IF EXISTS contact_search_external_id;
"""


class Migration(migrations.Migration):
    dependencies = [("contacts", "0001_initial"), ("tenants", "0002_row_level_security")]

    operations = [
        *[EnableTenantRLS(name) for name in TENANT_MODELS],
        RunSQLOnPostgreSQL(SEARCH_INDEXES, DROP_SEARCH_INDEXES),
    ]
