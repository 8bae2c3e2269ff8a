# Preferred channel: the campaign option, hidden sibling campaigns and runs, and each delivery's chosen channel.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0008_campaign_best_time"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="preferred_channel",
            field=models.BooleanField(
                default=False,
                help_text="Each contact gets the message on the channel they engage with most among those they consented to; without engagement, the first of the channels in order.",
                verbose_name="Send on each contact's preferred channel",
            ),
        ),
        migrations.AddField(
            model_name="campaign",
            name="preferred_channels",
            field=models.JSONField(
                blank=True, default=list, help_text="The channels it may choose, in the order used without engagement."
            ),
        ),
        migrations.AddField(
            model_name="campaign",
            name="sibling_of",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="siblings",
                to="campaigns.campaign",
            ),
        ),
        migrations.AddField(
            model_name="campaignrun",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="campaigns.campaignrun",
            ),
        ),
        migrations.AddField(
            model_name="delivery",
            name="channel_reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("most_engaged", "Most engaged"),
                    ("only_consented", "Only consented channel"),
                    ("no_engagement", "No engagement yet: the channel order"),
                    ("no_consent", "No consented channel"),
                ],
                db_default="",
                default="",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="delivery",
            name="chosen_channel",
            field=models.CharField(
                blank=True,
                choices=[("email", "Email"), ("sms", "SMS"), ("push", "Push"), ("webhook", "Webhook")],
                db_default="",
                default="",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="delivery",
            name="score_email",
            field=models.PositiveSmallIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="delivery",
            name="score_push",
            field=models.PositiveSmallIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="delivery",
            name="score_sms",
            field=models.PositiveSmallIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="variant",
            name="copy_of",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="campaigns.variant",
            ),
        ),
    ]
