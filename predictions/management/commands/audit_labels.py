"""Audit the current human labels and print the probable errors, most doubtful first.

    python manage.py audit_labels [--json] [--limit N]

Runs one label audit here, not in the task queue (the method is in
predictions/services/label_audit.py), records it like any other (the admin lists
it and the review screen's "Suspected label errors" order serves its flagged
images) and prints the flagged labels ranked by score (low: probably wrong). With
--json one list is printed: {"image_id", "original_name", "given_label",
"suggested_label", "score"} per flagged image.
"""

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from predictions.models import LabelAudit
from predictions.selectors.label_audit import label_suspicions_flagged
from predictions.services.label_audit import Reason, label_audit_run_now


class Command(BaseCommand):
    help = "Find the current human labels that are probably wrong (confident learning with cleanlab)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON list")
        parser.add_argument("--limit", type=int, default=None, help="print at most N flagged labels")

    def handle(self, *args, **options):
        limit = options["limit"]
        if limit is not None and limit < 0:
            raise CommandError("--limit must be 0 or more.")
        try:
            audit = label_audit_run_now(reason=Reason.COMMAND)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        if audit.status != LabelAudit.Status.DONE:
            raise CommandError(f"{audit} {audit.status}: {audit.error}")
        flagged = label_suspicions_flagged(audit=audit)
        if limit is not None:
            flagged = flagged[:limit]
        rows = [
            {
                "image_id": suspicion.image_id,
                "original_name": suspicion.image.original_name,
                "given_label": suspicion.given_label.name,
                "suggested_label": suspicion.suggested_label.name,
                "score": suspicion.score,
            }
            for suspicion in flagged
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows))
            return
        self.stdout.write(f"{audit}: {audit.flagged} of {audit.done} labels flagged ({audit.method}).")
        for rank, row in enumerate(rows, start=1):
            self.stdout.write(
                f"{rank:>4}. {row['score']:.4f}  {row['original_name']}  (id {row['image_id']}): "
                f"given {row['given_label']}, suggested {row['suggested_label']}"
            )
