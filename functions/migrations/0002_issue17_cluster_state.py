from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("functions", "0002_issue12b_secrets_invitations"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="cluster_state",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "Not provisioned"),
                    ("pending", "Provisioning"),
                    ("ready", "Provisioned"),
                    ("failed", "Failed"),
                    ("deleting", "Deleting"),
                ],
                default="",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="cluster_message",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="project",
            name="cluster_synced_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
