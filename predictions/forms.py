"""Forms of the model version pages: register a checkpoint, start a retraining."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from predictions.models import ModelVersion
from predictions.services.model_versions import version_name_for_upload, weights_dir_checkpoints


def _parse_triple(value: str, *, field_name: str) -> list[float] | None:
    if not value.strip():
        return None
    parts = [part for part in value.replace(",", " ").split() if part]
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise ValidationError(f"{field_name}: enter three numbers, e.g. 0.485, 0.456, 0.406.") from None
    if len(numbers) != 3:
        raise ValidationError(f"{field_name}: enter three numbers (one per RGB channel), got {len(numbers)}.")
    return numbers


class ModelVersionAddForm(forms.ModelForm):
    """Step one and only: the checkpoint plus whatever metadata is known.

    Blank metadata is read from the checkpoint when the cluster validates it; what is
    filled in here wins over the checkpoint (a bare tutorial checkpoint needs at least
    the class names).
    """

    checkpoint_upload = forms.FileField(
        label="Checkpoint file",
        required=False,
        help_text="A .pth/.pt file saved with torch.save: {'model_state_dict': ...} plus optional metadata.",
    )
    existing_checkpoint = forms.ChoiceField(
        label="…or a file already in the weights folder",
        required=False,
        help_text="Files under WEIGHTS_DIR (copied there by hand or by a training run).",
    )
    arch = forms.CharField(
        label="Architecture",
        required=False,
        help_text="resnet18_custom_head (default), resnet18_tutorial_head or a torchvision name "
        "such as resnet18 or resnet50. Blank: from the checkpoint.",
    )
    class_names_text = forms.CharField(
        label="Class names",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 40}),
        help_text="One per line, in the order of the model's outputs. Blank: from the checkpoint.",
    )
    input_size = forms.IntegerField(
        required=False, min_value=1, max_value=4096, help_text="Pixels. Blank: from the checkpoint (else 224)."
    )
    mean_text = forms.CharField(
        label="Normalisation mean", required=False, help_text="Three floats. Blank: from the checkpoint (else ImageNet's)."
    )
    std_text = forms.CharField(
        label="Normalisation std", required=False, help_text="Three floats. Blank: from the checkpoint (else ImageNet's)."
    )

    class Meta:
        model = ModelVersion
        fields = ["name", "notes"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["name"].required = False
        self.fields["name"].help_text = "Blank: the checkpoint's file name."
        self.fields["existing_checkpoint"].choices = [("", "---------")] + [
            (name, name) for name in weights_dir_checkpoints()
        ]

    def clean_class_names_text(self) -> list[str] | None:
        names = [line.strip() for line in self.cleaned_data["class_names_text"].splitlines() if line.strip()]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValidationError(f"Duplicate class names: {', '.join(duplicates)}.")
        return names or None

    def clean_mean_text(self) -> list[float] | None:
        return _parse_triple(self.cleaned_data["mean_text"], field_name="Mean")

    def clean_std_text(self) -> list[float] | None:
        std = _parse_triple(self.cleaned_data["std_text"], field_name="Std")
        if std and any(value <= 0 for value in std):
            raise ValidationError("Std: every value must be positive.")
        return std

    def clean(self):
        cleaned = super().clean()
        upload, existing = cleaned.get("checkpoint_upload"), cleaned.get("existing_checkpoint")
        if bool(upload) == bool(existing):
            raise ValidationError("Upload a checkpoint file or choose one from the weights folder (one of the two).")
        if not cleaned.get("name"):
            cleaned["name"] = version_name_for_upload(upload.name if upload else existing)
        return cleaned

    def registration_kwargs(self) -> dict:
        """The form's values as keyword arguments of model_version_register."""
        data = self.cleaned_data
        source = (
            {"checkpoint_file": data["checkpoint_upload"]}
            if data.get("checkpoint_upload")
            else {"checkpoint_path": settings.WEIGHTS_DIR / data["existing_checkpoint"]}
        )
        return {
            **source,
            "arch": data["arch"] or None,
            "class_names": data["class_names_text"],
            "input_size": data["input_size"],
            "mean": data["mean_text"],
            "std": data["std_text"],
            "notes": data.get("notes", ""),
        }


class TrainingForm(forms.Form):
    """The intermediate page of "Train a new version from reviewed labels"."""

    epochs = forms.IntegerField(initial=5, min_value=1, max_value=200)
    learning_rate = forms.FloatField(initial=1e-3, min_value=1e-7, max_value=1.0)
