from django.db import migrations, models


def create_row(apps, schema_editor):
    apps.get_model("orchestrator", "TuningVersion").objects.get_or_create(pk=1, defaults={"version": 0})


class Migration(migrations.Migration):
    dependencies = [("orchestrator", "0006_step_counted")]

    operations = [
        migrations.CreateModel(
            name="TuningVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("version", models.PositiveBigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(create_row, migrations.RunPython.noop),
    ]
