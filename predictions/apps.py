"""The predictions app's configuration, and where it plugs into the images app.

images never imports predictions (tests/test_import_graph.py): the predictions
app registers into images.hooks here, once the app registry is ready.
"""

from django.apps import AppConfig


class PredictionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "predictions"
    verbose_name = "Predictions and reviews"

    def ready(self) -> None:
        from images import hooks
        from predictions.auth import media_credentials_user
        from predictions.selectors.images import export_file_kind
        from predictions.services.jobs import upload_predictions_enqueue

        # An upload's images are queued for the active model once they commit.
        hooks.post_upload_register(upload_predictions_enqueue)
        # Export files live in the private media storage the images app serves.
        hooks.private_media_register(export_file_kind)
        # API tokens open the media too: a script fetches an export's image_url with its token.
        hooks.credentials_register(media_credentials_user)
