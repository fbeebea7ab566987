# Indexes for verify's lookups (orchestrator/workers/verify.py: find_duplicates, counterparty_history).

import django.db.models.fields.json
import django.db.models.functions.comparison
import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('orchestrator', '0007_tuningversion'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='task',
            index=models.Index(django.db.models.functions.comparison.Cast(django.db.models.fields.json.KeyTextTransform('invoice_number', 'fields'), models.TextField()), name='task_invoice_number'),
        ),
        migrations.AddIndex(
            model_name='task',
            index=models.Index(django.db.models.functions.text.Lower(django.db.models.fields.json.KeyTextTransform('counterparty', 'fields')), name='task_counterparty'),
        ),
    ]
