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
