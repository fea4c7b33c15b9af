from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.http import HttpRequest

from .uploads import human_size

# Room for the multipart framing and the form's other fields.
_REQUEST_OVERHEAD_BYTES = 1024 * 1024


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one input (Django docs, "Uploading multiple files").

    The per-file checks of FileField (an empty file fails the whole form) are
    left to the upload, which reports each bad file and stores the others.
    """

    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = [f for f in (data if isinstance(data, (list, tuple)) else [data]) if f]
        if not files and self.required:
            raise forms.ValidationError(self.error_messages["required"], code="required")
        return files


def too_many_files_message() -> str:
    return (
        f"Too many files in one upload: the limit is {settings.UPLOAD_MAX_FILES} files. "
        "Upload them in several parts, or put them in a .zip archive."
    )


def too_large_message(size: int | None = None) -> str:
    sent = f" ({human_size(size)} sent)" if size else ""
    return (
        f"The upload is too large{sent}: the limit is {human_size(settings.UPLOAD_MAX_TOTAL_BYTES)} "
        "per upload. Upload the files in several parts."
    )


class ImageUploadForm(forms.Form):
    files = MultipleFileField(
        label="Images or .zip archives",
        widget=MultipleFileInput(attrs={"accept": "image/*,.zip,application/zip"}),
    )
    name = forms.CharField(
        label="Batch name", max_length=200, required=False, help_text="Optional: helps you find this upload later."
    )
    overlap_share = forms.FloatField(
        label="Overlap share",
        required=False,
        min_value=0.0,
        max_value=1.0,
    )

    def __init__(self, *args, overlap: bool = False, **kwargs):
        """``overlap``: whether the user may set the batch's overlap share (images.change_uploadbatch: Leads)."""
        super().__init__(*args, **kwargs)
        if not overlap:
            del self.fields["overlap_share"]
        else:
            self.fields["overlap_share"].help_text = (
                "Optional: the share (0 to 1) of this upload's images that get k independent reviews; "
                f"empty: the global REVIEW_OVERLAP_SHARE ({settings.REVIEW_OVERLAP_SHARE:g})."
            )
        self.fields["files"].help_text = (
            f"JPEG, PNG, WebP, GIF, BMP or TIFF images, or .zip archives of them, {human_size(settings.IMAGE_MAX_BYTES)} "
            f"per image. At most {settings.UPLOAD_MAX_FILES} files and {human_size(settings.UPLOAD_MAX_TOTAL_BYTES)} "
            "per request: the page sends a larger selection in several."
        )

    def clean_files(self):
        files = self.cleaned_data["files"]
        if len(files) > settings.UPLOAD_MAX_FILES:
            raise forms.ValidationError(too_many_files_message(), code="too_many_files")
        total = sum(f.size or 0 for f in files)
        if total > settings.UPLOAD_MAX_TOTAL_BYTES:
            raise forms.ValidationError(too_large_message(total), code="too_large")
        return files


class PathListField(forms.Field):
    """Every value posted under the field's name, as strings (the files' folder paths)."""

    widget = forms.MultipleHiddenInput

    def clean(self, value):
        return [str(item) for item in value or []]


class UploadPartForm(ImageUploadForm):
    """One request of an upload the page sends in several (its script): files into a batch.

    Without ``batch`` a new batch is created (named ``name``); with it, the files
    go into that batch, which must be the user's own upload from this page.
    ``upload_key``, made by the page for one upload, finds the batch its first
    request created when that request's answer was lost. ``paths`` holds each file's path in a dropped folder ("site_a/DSC_505.jpg"),
    in the order of ``files`` ("" for a file chosen alone): the browser sends a
    file's bare name only.
    """

    batch = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    upload_key = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    paths = PathListField(required=False)

    def clean(self):
        cleaned = super().clean()
        paths, files = cleaned.get("paths") or [], cleaned.get("files") or []
        if paths and len(paths) != len(files):
            raise forms.ValidationError("One path per file, or none.", code="paths")
        return cleaned

    def named_files(self) -> list[tuple[str, object]]:
        """(name, file) of each file: its folder path where one was sent, else the name the browser gave."""
        files, paths = self.cleaned_data["files"], self.cleaned_data["paths"]
        return [(path or file.name, file) for file, path in zip(files, paths or [""] * len(files))]


def upload_request_error(request: HttpRequest) -> str:
    """Why this upload request cannot even be parsed, as a message for the form; "" when it can.

    Django's request parser raises TooManyFilesSent / RequestDataTooBig (a bare
    400) when request.FILES is first read; this reads it here to say why instead.
    """
    if request.method != "POST":
        return ""
    try:
        content_length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        content_length = 0
    if content_length > settings.UPLOAD_MAX_TOTAL_BYTES + _REQUEST_OVERHEAD_BYTES:
        return too_large_message(content_length)
    try:
        request.FILES  # noqa: B018 (parses the body)
    except TooManyFilesSent:
        return too_many_files_message()
    except RequestDataTooBig:
        return (
            f"The form's fields are too large (over {human_size(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)} "
            "besides the files)."
        )
    return ""
