from django.db import migrations, models


class Migration(migrations.Migration):
    """Steps are counted in the rollups after they commit (metrics.rollups.rollups_catch_up).
    Steps already here were counted when they were made, so they start as counted."""

    dependencies = [("orchestrator", "0005_deadletter_groups")]

    operations = [
        migrations.AddField(model_name="step", name="counted", field=models.BooleanField(default=True)),
        migrations.AlterField(model_name="step", name="counted", field=models.BooleanField(default=False)),
        migrations.AddIndex(
            model_name="step",
            index=models.Index(condition=models.Q(("counted", False)), fields=["id"], name="step_uncounted"),
        ),
    ]
