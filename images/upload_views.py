"""The admin's upload page and the two JSON endpoints its script sends a large upload through.

Wired in images/admin.py (``ImageAdmin.get_urls``). The page works as a plain
form (one POST of up to UPLOAD_MAX_FILES files); with its script
(images/static/images/upload.js) the files, dropped or chosen, folders and zips
alike, go as several requests into ONE upload batch:

- ``upload/part/``: a few files; the first request creates the batch, the
  next ones name it. Answers each file's report entries (with the file's
  position in the request: a zip has one per member), so the page shows every
  file's outcome. A request sent again after a dropped connection stores
  nothing twice (images.services.batch_add_files: "already stored in this upload").
- ``upload/<batch id>/finish/``: the summary message, and where to go (the batch's page).

The upload views are exempt from the CSRF middleware, which would parse the
body before the view could turn "too many files" into a message; they check
CSRF themselves (csrf_protect) before storing anything.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from . import services
from .forms import ImageUploadForm, UploadPartForm, upload_request_error
from .models import UploadBatch

# Files per request the page's script sends, and bytes at most (its data attributes; the
# server's limits cap both). Small requests keep the progress fine and a retry cheap.
UPLOAD_PART_FILES = 50
UPLOAD_PART_BYTES = 64 * 1024 * 1024
# The session remembers the batch of each of the user's latest uploads by the page's upload key.
SESSION_UPLOADS = "image_upload_batches"
SESSION_UPLOADS_KEPT = 20


def upload_summary(batch: UploadBatch) -> str:
    return (
        f"{batch}: {batch.accepted_count} accepted, {batch.duplicate_count} duplicate(s), "
        f"{batch.rejected_count} rejected. Thumbnails and predictions are made in the background."
    )


def _may_set_overlap(request) -> bool:
    """Whether the upload form offers the batch's overlap share: to those who may edit it on the batch (Leads)."""
    return request.user.has_perm("images.change_uploadbatch")


def _check_add_permission(request, model_admin) -> None:
    if not model_admin.has_add_permission(request):
        raise PermissionDenied


def upload_view(request, *, model_admin):
    """The upload page; a plain POST of the form stores its files as one batch."""
    _check_add_permission(request, model_admin)
    request_error = upload_request_error(request)
    if request_error:
        form = ImageUploadForm(overlap=_may_set_overlap(request))
        return _render_upload(request, model_admin, form, request_error=request_error)
    return csrf_protect(_upload_form_view)(request, model_admin=model_admin)


def _upload_form_view(request, *, model_admin):
    form = ImageUploadForm(request.POST or None, request.FILES or None, overlap=_may_set_overlap(request))
    if request.method == "POST" and form.is_valid():
        batch = services.upload_files(
            files=[(f.name, f) for f in form.cleaned_data["files"]],
            user=request.user,
            source=UploadBatch.Source.ADMIN,
            name=form.cleaned_data["name"],
            overlap_share=form.cleaned_data.get("overlap_share"),
        )
        _summary_message(request, model_admin, batch)
        return redirect("admin:images_uploadbatch_change", batch.pk)
    return _render_upload(request, model_admin, form)


def _render_upload(request, model_admin, form, *, request_error: str = ""):
    opts = model_admin.opts
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": "Upload images",
        "form": form,
        "request_error": request_error,
        "media": model_admin.media + form.media,
        "part_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_upload_part"),
        "finish_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_upload_finish", args=[0]),
        "part_files": UPLOAD_PART_FILES,
        "part_bytes": UPLOAD_PART_BYTES,
        "max_files": settings.UPLOAD_MAX_FILES,
        "max_bytes": settings.UPLOAD_MAX_TOTAL_BYTES,
    }
    return TemplateResponse(request, "admin/images/image/upload.html", context)


@require_POST
def upload_part_view(request, *, model_admin):
    """Store one request's files into the upload's batch (created by the first request); JSON."""
    _check_add_permission(request, model_admin)
    request_error = upload_request_error(request)
    if request_error:
        return JsonResponse({"error": request_error}, status=400)
    return csrf_protect(_upload_part)(request, model_admin=model_admin)


def _upload_part(request, *, model_admin):
    form = UploadPartForm(request.POST, request.FILES, overlap=_may_set_overlap(request))
    if not form.is_valid():
        errors = [str(error) for field_errors in form.errors.values() for error in field_errors]
        return JsonResponse({"error": " ".join(errors)}, status=400)
    batch = _part_batch(request, form.cleaned_data)
    entries: list[dict] = []

    def answer(entry: dict) -> None:
        index = entry.pop("sent_index")  # the page matches entries to its files by position
        entries.append({**entry, "index": index})

    services.batch_add_files(batch=batch, files=form.named_files(), user=request.user, on_file=answer)
    return JsonResponse(
        {
            "batch": batch.pk,
            "entries": entries,
            "counts": {
                "accepted": batch.accepted_count,
                "duplicate": batch.duplicate_count,
                "rejected": batch.rejected_count,
            },
        }
    )


@require_POST
def upload_finish_view(request, batch_id: int, *, model_admin):
    """The upload's summary as the admin's message on the next page; JSON with that page's address."""
    _check_add_permission(request, model_admin)
    batch = _own_batch(request, batch_id)
    _summary_message(request, model_admin, batch)
    return JsonResponse({"url": reverse("admin:images_uploadbatch_change", args=[batch.pk])})


def _part_batch(request, cleaned: dict) -> UploadBatch:
    """The batch a part goes into: the one it names, the one its upload key made, or a new one."""
    if cleaned["batch"] is not None:
        return _own_batch(request, cleaned["batch"])
    key = cleaned["upload_key"]
    known = request.session.get(SESSION_UPLOADS, {})
    if key and key in known:
        return _own_batch(request, known[key])
    batch = services.batch_create(
        user=request.user,
        source=UploadBatch.Source.ADMIN,
        name=cleaned["name"],
        overlap_share=cleaned.get("overlap_share"),
    )
    if key:
        # Saved with the response even when the client is gone: its retry finds this batch.
        request.session[SESSION_UPLOADS] = dict([*list(known.items())[-(SESSION_UPLOADS_KEPT - 1):], (key, batch.pk)])
    return batch


def _own_batch(request, batch_id: int) -> UploadBatch:
    """The user's own admin upload: nobody adds files to another's batch, nor to an import's."""
    batch = UploadBatch.objects.filter(pk=batch_id, created_by=request.user, source=UploadBatch.Source.ADMIN).first()
    if batch is None:
        raise Http404("No such upload of yours.")
    return batch


def _summary_message(request, model_admin, batch: UploadBatch) -> None:
    level = messages.WARNING if batch.rejected_count else messages.SUCCESS
    model_admin.message_user(request, upload_summary(batch), level)
