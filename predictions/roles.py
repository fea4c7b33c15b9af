"""The three roles, as permission codenames per group.

Kept in one plain module so the data migration and the tests read the same
definition.
"""

UPLOADERS = "Uploaders"
REVIEWERS = "Reviewers"
LEADS = "Leads"

ROLE_PERMISSIONS: dict[str, list[str]] = {
    UPLOADERS: [
        "images.add_image",
        "images.view_image",
        "images.add_uploadbatch",
        "images.view_uploadbatch",
        "predictions.view_prediction",
        "predictions.view_predictionjob",
        "predictions.view_label",
    ],
    REVIEWERS: [
        "images.view_image",
        "images.view_uploadbatch",
        "predictions.view_prediction",
        "predictions.view_predictionjob",
        "predictions.view_label",
        "predictions.add_review",
        "predictions.view_review",
    ],
    # Leads get every permission of both apps (export and model versions included).
    LEADS: ["images.*", "predictions.*"],
}


def role_groups_ensure(*, group_model, permission_model) -> None:
    """Create the role groups with their permissions (idempotent).

    Takes the models as arguments so the data migration can pass its
    historical ones and tests can restore the groups after a flush.
    """
    for group_name, codes in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=group_name)
        permissions = []
        for code in codes:
            app_label, codename = code.split(".")
            matching = permission_model.objects.filter(content_type__app_label=app_label)
            if codename != "*":
                matching = matching.filter(codename=codename)
            permissions.extend(matching)
        group.permissions.add(*permissions)
