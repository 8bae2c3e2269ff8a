from __future__ import annotations

from rest_framework import serializers

from tenants.models import ApiKey, Membership, Tenant


class TenantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = (
            "id",
            "name",
            "slug",
            "time_zone",
            "default_sender_name",
            "default_sender_email",
            "postal_address",
            "quiet_hours_start",
            "quiet_hours_end",
            "frequency_cap_messages",
            "frequency_cap_days",
            "created_at",
        )
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
