"""Auto-accept a model version's confident predictions with a guaranteed error rate.

    python manage.py auto_accept --max-error 0.02 [--confidence 0.95] [--model-version NAME]
                                 [--dry-run] [--json] [--user USERNAME]

The method and its assumptions are in predictions/services/auto_accept.py: the
threshold comes from the version's random audit sample (reviews made in the
"Audit (random)" order), with a Clopper–Pearson bound per threshold and
fixed-sequence testing. The run happens here, not in the task queue. With
--json one object is printed: model_version, threshold, bound, audit_sample,
accepted (with --dry-run: how many it would accept), dry_run, and needed (how
many more random audit reviews) when the sample is too small. A too-small
sample is not an error: the exit status is 0 and nothing is accepted.
"""

import json

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from predictions.models import ModelVersion
from predictions.selectors.versions import model_version_active
from predictions.services.auto_accept import auto_accept_preview, auto_accept_run_start


class Command(BaseCommand):
    help = "Accept a model version's predictions above a threshold chosen for a guaranteed maximum error rate."

    def add_arguments(self, parser):
        parser.add_argument("--max-error", type=float, required=True, help="e.g. 0.02 for at most 2%% wrong labels")
        parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the guarantee")
        parser.add_argument("--model-version", help="version name (default: the active version)")
        parser.add_argument("--dry-run", action="store_true", help="decide and count, accept nothing")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument(
            "--user", help="who the accepted images' reviews are by (default: the first active superuser)"
        )

    def handle(self, *args, **options):
        version = self._version(options["model_version"])
        try:
            if options["dry_run"]:
                preview = auto_accept_preview(
                    model_version=version, max_error=options["max_error"], confidence=options["confidence"]
                )
                decision = preview.decision
                outcome = (decision.threshold, decision.bound, decision.sample_size, preview.would_accept, decision.needed)
            else:
                run = auto_accept_run_start(
                    model_version=version,
                    max_error=options["max_error"],
                    confidence=options["confidence"],
                    user=self._user(options["user"]),
                    background=False,
                )
                outcome = (run.threshold, run.bound, run.audit_sample, run.accepted, run.needed)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc

        threshold, bound, sample, accepted, needed = outcome
        result = {
            "model_version": version.name,
            "threshold": threshold,
            "bound": bound,
            "audit_sample": sample,
            "accepted": accepted,
            "dry_run": options["dry_run"],
        }
        if threshold is None:
            result["needed"] = needed
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(self._text(result, options))

    def _version(self, name: str | None) -> ModelVersion:
        if name:
            version = ModelVersion.objects.filter(name=name).first()
            if version is None:
                raise CommandError(f"There is no model version named {name!r}.")
            return version
        version = model_version_active()
        if version is None:
            raise CommandError("There is no active model version: name one with --model-version.")
        return version

    def _user(self, username: str | None):
        users = get_user_model().objects.filter(is_active=True)
        user = users.filter(username=username).first() if username else users.filter(is_superuser=True).order_by("pk").first()
        if user is None:
            raise CommandError(f"No active user {username!r}." if username else "No active superuser: give --user.")
        return user

    @staticmethod
    def _text(result: dict, options: dict) -> str:
        asked = f"error <= {options['max_error']:.1%} with {options['confidence']:.0%} confidence"
        if result["threshold"] is None:
            return (
                f"{result['model_version']}: the random audit sample ({result['audit_sample']} reviews) is too small "
                f"for {asked}; about {result['needed']} more reviews in the Audit (random) order are needed. "
                "Nothing accepted."
            )
        verb = "would accept" if result["dry_run"] else "accepted"
        return (
            f"{result['model_version']}: threshold {result['threshold']:.4f}, guaranteed error <= {result['bound']:.2%} "
            f"({asked}, audit sample of {result['audit_sample']}); {verb} {result['accepted']} images."
        )
