"""The role groups' data migration step, shared by every migration that adds permissions.

(The migration loader skips modules whose names start with an underscore.)
"""

from django.contrib.auth.management import create_permissions


def create_role_groups(apps, schema_editor):
    from predictions.roles import role_groups_ensure

    # Permissions are normally created after all migrations ran; the groups
    # need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None

    role_groups_ensure(
        group_model=apps.get_model("auth", "Group"), permission_model=apps.get_model("auth", "Permission")
    )
