"""Private media: every file under MEDIA_URL goes through a permission check.

Only a path that an Image (file or thumbnail) or an ExportJob points at is
served, so no request can name an arbitrary file of the storage. A permitted
file on this machine's disk is streamed (or handed to the front server); one
on the object store (MEDIA_STORAGE=s3) is a redirect to a presigned URL that
expires within S3_URL_SECONDS, the only way to the private object. The user is
the session's, or the one a request's own credentials name (an API token, through
images.hooks.credentials_user), with the same permissions either way.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from . import hooks, selectors


@require_safe
def media_file(request: HttpRequest, path: str) -> HttpResponse:
    # A script names itself by its own credentials (an API token, registered by
    # predictions in images.hooks); a browser by its session.
    try:
        user = hooks.credentials_user(request) or request.user
    except hooks.CredentialsRefused as refused:
        response = HttpResponse(f"{refused}\n", status=401, content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="media"'
        return response
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if not (user.is_active and user.is_staff and user.has_perm("images.view_image")):
        raise PermissionDenied
    kind = selectors.media_file_kind(path=path)
    if kind is None:
        raise Http404("No such file.")
    if kind == selectors.MediaKind.EXPORT and not user.has_perm("images.export_image"):
        raise PermissionDenied

    signed_url = selectors.media_signed_url(path=path, kind=kind)
    if signed_url is not None:
        response = HttpResponseRedirect(signed_url)
        if kind == selectors.MediaKind.EXPORT:
            patch_cache_control(response, private=True, no_store=True)
        else:
            # Reused for half the URL's life at most, so a cached redirect never leads to an expired URL.
            patch_cache_control(response, private=True, max_age=settings.S3_URL_SECONDS // 2)
        return response

    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if settings.MEDIA_SENDFILE_HEADER:
        response = HttpResponse(content_type=content_type)
        response[settings.MEDIA_SENDFILE_HEADER] = quote(settings.MEDIA_SENDFILE_PREFIX + path)
    else:
        try:
            stream = default_storage.open(path, "rb")
        except FileNotFoundError:
            raise Http404("The file is missing from the storage.") from None
        response = FileResponse(
            stream,
            content_type=content_type,
            as_attachment=kind == selectors.MediaKind.EXPORT,
            filename=path.rsplit("/", 1)[-1],
        )
    if kind == selectors.MediaKind.EXPORT:
        patch_cache_control(response, private=True, no_cache=True)
    else:
        # Content-addressed files never change; a permission change still
        # applies to the next page the browser loads.
        patch_cache_control(response, private=True, max_age=3600)
    return response
