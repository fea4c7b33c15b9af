"""Logging filters for the project's one console handler (settings.LOGGING)."""

from __future__ import annotations

import logging


class ClientErrorsOnOneLine(logging.Filter):
    """A 4xx response's record becomes one line: the exception's message instead of its traceback.

    Django logs a refused request (PermissionDenied, a 403) with the exception
    attached, and a traceback of the client's mistake buries the server's own
    errors in the log. 5xx records keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if record.exc_info and isinstance(status, int) and status < 500:
            exception = record.exc_info[1]
            detail = f"{type(exception).__name__}: {exception}" if str(exception) else type(exception).__name__
            record.msg, record.args = f"{record.getMessage()} ({detail})", None
            record.exc_info, record.exc_text = None, None
        return True
