from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("analytics", "0004_message_stats")]

    operations = [
        migrations.AddField(
            model_name="experiment", name="arm_channels", field=models.JSONField(blank=True, default=dict)
        ),
        migrations.AddField(
            model_name="experiment", name="arm_siblings", field=models.JSONField(blank=True, default=dict)
        ),
        migrations.AlterField(
            model_name="experiment",
            name="tested",
            field=models.CharField(
                choices=[
                    ("subject", "Subject line"),
                    ("content", "Content"),
                    ("cta", "Call to action"),
                    ("send_time", "Send time"),
                    ("channel", "Channel"),
                ],
                default="subject",
                max_length=10,
            ),
        ),
    ]
