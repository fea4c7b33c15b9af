"""Register a checkpoint as a model version from the command line, validated on the spot.

    python manage.py register_model weights/resnet18_model.pth --arch resnet18 \
        --classes circle,square,triangle --input-size 224 --activate

Runs outside the web process, so it validates synchronously (importing torch here is
fine) and exits non-zero when the checkpoint is refused.
"""

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from predictions.models import ModelVersion
from predictions.services.model_versions import (
    model_version_activate,
    model_version_register,
    version_name_for_upload,
)


def _floats(value: str) -> list[float]:
    numbers = [float(part) for part in value.replace(",", " ").split()]
    if len(numbers) != 3:
        raise ValueError(f"expected three numbers, got {len(numbers)}")
    return numbers


class Command(BaseCommand):
    help = "Register a checkpoint as a model version, validate it and optionally activate it."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="checkpoint file (.pth); copied into WEIGHTS_DIR unless already there")
        parser.add_argument("--name", help="version name (default: the file name without extension)")
        parser.add_argument("--arch", help="architecture (default: the checkpoint's, else resnet18_custom_head)")
        classes = parser.add_mutually_exclusive_group()
        classes.add_argument("--classes", help="class names in output order, comma-separated")
        classes.add_argument("--classes-file", type=Path, help="class names in output order, one per line")
        parser.add_argument("--input-size", type=int)
        parser.add_argument("--mean", type=_floats, help="three floats, e.g. 0.485,0.456,0.406")
        parser.add_argument("--std", type=_floats, help="three floats, e.g. 0.229,0.224,0.225")
        parser.add_argument("--notes", default="")
        parser.add_argument("--activate", action="store_true", help="activate it and queue the images it lacks")

    def handle(self, *args, path: Path, **options):
        if options["classes_file"]:
            try:
                lines = options["classes_file"].read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise CommandError(f"{options['classes_file']}: {exc.strerror or exc}") from exc
            class_names = [line.strip() for line in lines if line.strip()]
        elif options["classes"]:
            class_names = [name.strip() for name in options["classes"].split(",") if name.strip()]
        else:
            class_names = None
        try:
            version = model_version_register(
                name=options["name"] or version_name_for_upload(path.name),
                checkpoint_path=path,
                arch=options["arch"],
                class_names=class_names,
                input_size=options["input_size"],
                mean=options["mean"],
                std=options["std"],
                notes=options["notes"],
                validate_now=True,
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc

        if version.validation_status != ModelVersion.Validation.VALID:
            raise CommandError(f"Model version {version.name} (id {version.pk}) is INVALID: {version.validation_error}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Model version {version.name} (id {version.pk}) is valid: {version.arch}, "
                f"{len(version.class_names)} classes ({', '.join(version.class_names)}), "
                f"input {version.input_size}, checkpoint {version.checkpoint.name}"
            )
        )
        if options["activate"]:
            try:
                job = model_version_activate(version=version, user=None)
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from exc
            queued = f"prediction job {job.pk} queued for {job.total} images" if job else "no image needs predicting"
            self.stdout.write(self.style.SUCCESS(f"Activated {version.name}; {queued}."))
