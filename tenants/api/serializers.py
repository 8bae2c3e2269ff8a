from __future__ import annotations

from rest_framework import serializers

from tenants.models import TENANT_SETTINGS_FIELDS, ApiKey, Membership, Tenant


class TenantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = ("id", "slug", *TENANT_SETTINGS_FIELDS, "created_at")
        read_only_fields = fields


class MembershipSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    full_name = serializers.CharField(source="user.full_name", read_only=True)

    class Meta:
        model = Membership
        fields = ("id", "email", "full_name", "role", "created_at")
        read_only_fields = fields


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ("id", "name", "prefix", "scope", "created_at", "last_used_at", "revoked_at")
        read_only_fields = fields
