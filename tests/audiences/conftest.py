from __future__ import annotations

import pytest

from tenants.context import tenant_context
from tests.audiences.helpers import allow_advertising
from tests.campaigns.test_channels import provider  # noqa: F401  (a fixture: the local HTTP server)


@pytest.fixture
def receiver(provider, settings, tmp_path):  # noqa: F811
    """The campaigns' local HTTP server as the destination, let through the SSRF guard by its development
    override; pushed files are stored under a temporary MEDIA_ROOT."""
    settings.MEDIA_ROOT = str(tmp_path)
    return provider


@pytest.fixture
def shop(world):
    """Tenant A with the advertising purpose, in scope for the test."""
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        allow_advertising(tenant)
        yield tenant
