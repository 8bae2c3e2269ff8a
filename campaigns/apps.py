from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"

    def ready(self) -> None:
        # Celery's autodiscovery imports campaigns.tasks only; the beat and sweep tasks live here.
        from campaigns import scheduling  # noqa: F401
        from campaigns.privacy import contact_erasing_received
        from campaigns.usage import campaign_usages
        from campaigns.views_feedback import connect_anymail
        from contacts.signals import contact_erasing
        from segments.selectors import USAGE_FINDERS

        USAGE_FINDERS.append(campaign_usages)
        connect_anymail()
        contact_erasing.connect(contact_erasing_received, dispatch_uid="campaigns.privacy.contact_erasing")
