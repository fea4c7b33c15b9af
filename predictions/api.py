"""The JSON prediction endpoint: the tutorial's view, done right.

``POST /api/predict/`` with one or more image files in the multipart field
``images`` answers, in the order the files were sent::

    {"labels": ["circle", "star"],
     "predictions": [{"index": 0, "file": "a.jpg", "label": "circle", "confidence": 0.93,
                      "top_k": [{"label": "circle", "probability": 0.93}, ...]}, ...],
     "errors": [],
     "model_version": "demo-v1"}

``labels`` is the tutorial's contract: one entry per file sent. The model is
the active model version's, loaded once per process (``predictions.inference``)
and reloaded when another version is activated; the files are decoded from
memory and predicted in batches (INFERENCE_BATCH_SIZE), decoding overlapped
with inference.

Statuses:

- 200: every file predicted.
- 422: some files are not usable images. The others are still answered: a bad
  file has ``null`` in ``labels``, no entry in ``predictions`` and an entry
  ``{"index", "file", "error"}`` in ``errors``; ``index`` is the file's
  position in the request.
- 400: no file in the ``images`` field (or a malformed multipart body).
- 401: no credentials, or a bad or revoked token (``WWW-Authenticate: Bearer``).
- 403: the user may not use the API (or store images), or a session request
  failed the CSRF check.
- 405: a method other than GET and POST.
- 411: a body without ``Content-Length`` on a server that cannot tell where it
  ends (gunicorn can: there such a body is read up to the limit).
- 413: a body over ``API_MAX_REQUEST_BYTES`` (refused from its ``Content-Length``
  before it is read), more than ``API_MAX_FILES`` files, a file over
  ``IMAGE_MAX_BYTES``, images over ``API_MAX_PIXELS_PER_REQUEST`` pixels in all
  (read from their headers, before any decode), or a body Django refuses to
  parse (``DATA_UPLOAD_MAX_*``).
- 503: no active validated model version (on a first run: the demo model is still
  training, said so with a ``Retry-After``), or its checkpoint cannot be loaded.

Every error answer is JSON with an ``error`` message.

``?store=1`` also stores the predicted files as an upload batch (source API)
with their predictions, so they enter the review queue at once; the answer then
carries ``batch_id`` and each prediction an ``image_id``.

``GET`` renders a small upload page for people signed in to the admin.

Token requests need no CSRF token (they carry no cookie a browser could send
on its own); session requests do, checked by Django's own CSRF middleware code.
"""

from __future__ import annotations

import logging
import tempfile
import warnings

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFilesSent
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from images.models import UploadBatch
from images.uploads import human_size
from predictions.auth import (
    ApiAuthenticationFailed,
    api_request_user,
    can_store_through_api,
    can_use_prediction_api,
    csrf_failure_reason,
)
from predictions.models import ModelVersion
from predictions.selectors.demo import demo_training_unfinished
from predictions.selectors.versions import model_version_active
from predictions.services.api_predictions import UploadsPrediction, uploads_predict, uploads_store

logger = logging.getLogger(__name__)

FILES_FIELD = "images"
TOP_K = 3
ALLOWED_METHODS = "GET, HEAD, POST"


class ApiError(Exception):
    """Ends the request with a JSON error answer."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> JsonResponse:
        return JsonResponse({"error": self.message, **self.extra}, status=self.status, headers=self.headers)


@csrf_exempt  # for token requests only: session requests are checked in _predict
def predict(request: HttpRequest) -> HttpResponse:
    if request.method in ("GET", "HEAD"):
        return _upload_page(request)
    if request.method != "POST":
        return ApiError(
            405,
            f"method {request.method} is not allowed: POST image files in the field '{FILES_FIELD}'",
            headers={"Allow": ALLOWED_METHODS},
        ).response()
    try:
        return _predict(request)
    except ApiError as exc:
        return exc.response()


def _predict(request: HttpRequest) -> JsonResponse:
    user, via_token = _authenticated_user(request)
    if not can_use_prediction_api(user):
        raise ApiError(403, f"user {user.get_username()!r} may not use the prediction API")
    store = request.GET.get("store", "").lower() in ("1", "true", "yes")
    if store and not can_store_through_api(user):
        raise ApiError(403, f"user {user.get_username()!r} may not store images (?store=1 needs the add image permission)")

    _limit_body(request)
    files = _uploaded_files(request)
    _check_pixel_budget(files)
    if not via_token:
        reason = csrf_failure_reason(request)
        if reason:
            raise ApiError(
                403,
                f"CSRF check failed ({reason}): send the csrftoken cookie's value in the X-CSRFToken header, "
                "or use an API token",
            )

    model_version = model_version_active()
    if model_version is None:
        raise _no_active_model()
    predictor = _predictor(model_version)
    sources = [(upload.name, upload) for upload in files]
    result = uploads_predict(files=sources, predictor=predictor)
    batch = uploads_store(files=sources, result=result, model_version=model_version, user=user) if store else None
    return JsonResponse(_answer(result, model_version, batch), status=422 if result.failed else 200)


def _authenticated_user(request: HttpRequest):
    try:
        return api_request_user(request)
    except ApiAuthenticationFailed as exc:
        challenge = 'Bearer realm="api"'
        if "Authorization" in request.headers:
            challenge += ', error="invalid_token"'
        raise ApiError(401, str(exc), headers={"WWW-Authenticate": challenge}) from None


def _limit_body(request: HttpRequest) -> None:
    """Refuse a body over API_MAX_REQUEST_BYTES before request.FILES reads it.

    Django would spool the whole body to disk first and only then let the view
    see its size. With a Content-Length the size is known before a byte is read;
    without one, the body is read here up to the limit and handed to Django
    with its length.
    """
    limit = settings.API_MAX_REQUEST_BYTES
    length = request.META.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            raise ApiError(400, f"malformed Content-Length header: {length!r}") from None
        if size > limit:
            raise ApiError(413, _body_too_large(size, limit))
        return
    source = _unsized_body(request)
    body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
    size = 0
    while chunk := source.read(min(_READ_CHUNK, limit + 1 - size)):
        size += len(chunk)
        if size > limit:
            body.close()
            raise ApiError(413, _body_too_large(None, limit))
        body.write(chunk)
    body.seek(0)
    # Django reads the body through _stream and parses only CONTENT_LENGTH bytes.
    request._stream = body
    request.META["CONTENT_LENGTH"] = str(size)


_READ_CHUNK = 64 * 1024


def _unsized_body(request: HttpRequest):
    environ = getattr(request, "environ", {})
    if "wsgi.input" not in environ:
        return request._stream  # ASGI: Django has already read the body into a file
    if not environ.get("wsgi.input_terminated"):
        # PEP 3333: without a length, reading wsgi.input may wait forever.
        raise ApiError(411, "send a Content-Length header: this server cannot tell where the body ends without one")
    return environ["wsgi.input"]


def _body_too_large(size: int | None, limit: int) -> str:
    sent = "over" if size is None else f"{human_size(size)}, over"
    return f"the request body is {sent} the {human_size(limit)} limit per request (API_MAX_REQUEST_BYTES)"


def _check_pixel_budget(files: list[UploadedFile]) -> None:
    """Refuse images over API_MAX_PIXELS_PER_REQUEST in all, from their headers alone."""
    total = sum(_header_pixels(upload) for upload in files)
    budget = settings.API_MAX_PIXELS_PER_REQUEST
    if total > budget:
        raise ApiError(
            413,
            f"the images have {total:,} pixels in all, over the limit of {budget:,} per request "
            "(API_MAX_PIXELS_PER_REQUEST): send fewer or smaller images per request",
        )


def _header_pixels(upload: UploadedFile) -> int:
    """The pixels the model's decode of ``upload`` would produce, from its header (nothing decoded).

    0 for a file the decoder refuses without decoding it (not an allowed image,
    over IMAGE_MAX_PIXELS): it costs nothing and gets its own error.
    """
    from PIL import Image as PILImage

    from ml.decode import ALLOWED_FORMATS

    position = upload.tell()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(upload, formats=ALLOWED_FORMATS) as image:
                width, height = image.size
    except Exception:  # Pillow's header parsers raise many kinds; the decode names the reason
        return 0
    finally:
        upload.seek(position)
    pixels = width * height
    return pixels if pixels <= settings.IMAGE_MAX_PIXELS else 0


def _uploaded_files(request: HttpRequest) -> list[UploadedFile]:
    try:
        files = request.FILES.getlist(FILES_FIELD)
    except TooManyFilesSent:
        raise ApiError(
            413, f"too many files: at most {min(settings.API_MAX_FILES, settings.DATA_UPLOAD_MAX_NUMBER_FILES)} per request"
        ) from None
    except RequestDataTooBig:
        raise ApiError(413, "the request's form fields are too large") from None
    except MultiPartParserError as exc:
        raise ApiError(400, f"malformed multipart body: {exc}") from None
    if not files:
        raise ApiError(400, f"no files: send one or more images in the multipart field '{FILES_FIELD}'")
    if len(files) > settings.API_MAX_FILES:
        raise ApiError(413, f"too many files: {len(files)} sent, at most {settings.API_MAX_FILES} per request")
    limit = human_size(settings.IMAGE_MAX_BYTES)
    too_large = [
        {"index": index, "file": upload.name, "error": f"file is {human_size(upload.size)}, over the {limit} limit per image"}
        for index, upload in enumerate(files)
        if upload.size > settings.IMAGE_MAX_BYTES
    ]
    if too_large:
        raise ApiError(413, f"{len(too_large)} file(s) over the {limit} limit per image", errors=too_large)
    return files


def _no_active_model() -> ApiError:
    demo = demo_training_unfinished()
    if demo is not None and not demo.failed:
        # A first run: the model comes within minutes, so a client may simply try again.
        return ApiError(503, demo.waiting_message, headers={"Retry-After": "30"})
    return ApiError(503, "no model version is active: a lead activates one in the admin")


def _predictor(model_version: ModelVersion):
    from predictions.inference import get_predictor

    try:
        return get_predictor(model_version)
    except Exception as exc:  # a checkpoint that will not load is the service being down, not a bug here
        logger.exception("Model version %s could not be loaded", model_version)
        raise ApiError(503, f"model version {model_version.name!r} could not be loaded: {exc}") from exc


def _answer(result: UploadsPrediction, model_version: ModelVersion, batch: UploadBatch | None) -> dict:
    labels: list[str | None] = []
    predictions: list[dict] = []
    errors: list[dict] = []
    for index, outcome in enumerate(result.outcomes):
        if outcome.prediction is None:
            labels.append(None)
            errors.append({"index": index, "file": outcome.name, "error": outcome.error})
            continue
        labels.append(outcome.prediction.label)
        entry = {
            "index": index,
            "file": outcome.name,
            "label": outcome.prediction.label,
            "confidence": round(outcome.prediction.confidence, 6),
            "top_k": [
                {"label": label, "probability": round(probability, 6)}
                for label, probability in outcome.prediction.top_k(TOP_K)
            ],
        }
        if batch is not None:
            entry["image_id"] = outcome.image_id
        predictions.append(entry)
    answer = {"labels": labels, "predictions": predictions, "errors": errors, "model_version": model_version.name}
    if batch is not None:
        answer["batch_id"] = batch.pk
    return answer


def _upload_page(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not can_use_prediction_api(request.user):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": "Predict images",
        "model_version": model_version_active(),
        "demo_training": demo_training_unfinished(),
        "files_field": FILES_FIELD,
        "max_files": settings.API_MAX_FILES,
        "max_file_size": human_size(settings.IMAGE_MAX_BYTES),
        "can_store": can_store_through_api(request.user),
    }
    return render(request, "predictions/predict.html", context)
