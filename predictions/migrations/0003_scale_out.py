"""Scale-out: a job's last progress, the periodic prediction sweep, the shared cache's table.

The sweep's django-q2 Schedule and the database cache's table are made here so
that every deployment gets them with `migrate` alone.
"""

import django.utils.timezone
from django.core.management import call_command
from django.db import migrations, models

SWEEP_FUNC = "predictions.tasks.sweep_predictions"


def sweep_schedule_create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.using(schema_editor.connection.alias).get_or_create(
        func=SWEEP_FUNC,
        defaults={
            "name": "Queue lost prediction chunks again",
            "schedule_type": "I",  # Schedule.MINUTES
            "minutes": 1,
            "repeats": -1,
            "next_run": django.utils.timezone.now(),
        },
    )


def sweep_schedule_delete(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.using(schema_editor.connection.alias).filter(func=SWEEP_FUNC).delete()


def cache_table_create(apps, schema_editor):
    # Does nothing when the cache is Redis (REDIS_URL).
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0002_roles"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="predictionjob",
            name="progressed_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(sweep_schedule_create, sweep_schedule_delete),
        migrations.RunPython(cache_table_create, migrations.RunPython.noop),
    ]
