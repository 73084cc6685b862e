"""How log lines look: JSON (one object per line, the production profile) or plain text.

LOG_FORMAT=json|plain picks one (settings.LOGGING); gunicorn's own logs use the same
formatters (deploy/gunicorn_logging.py). A JSON line holds
  time        ISO 8601, UTC, milliseconds ("2025-01-31T09:15:02.123Z")
  level       DEBUG, INFO, WARNING, ERROR, CRITICAL
  logger      the logger's name ("finance", "django.request", "gunicorn.access"...)
  message     the message, its arguments filled in
  request_id  the request or job being served (request_context), null outside one
  user_id     the signed-in user of that request, when there is one
  exc_info    the exception and its traceback, as one string (still one line: JSON escapes
              the newlines)
and every field the caller passed in `extra` (reference, amount, operation, outcome...).
Decimals are written as strings, exactly as they are: money never becomes a float here.

The standard library's logging.Formatter is all it takes (about forty lines); a JSON logging
library would add a dependency to save none of them, and the field rules below (which extras
to leave out, how to write Decimals) would still be ours.
"""

import json
import logging
import logging.config
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

from django.utils.functional import LazyObject, empty

import request_context

LOG_FORMATS = ("json", "plain")

# The attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_CONTEXT = ("request_id", "user_id")
# Extras never written: Django's django.request and django.server lines pass the HttpRequest,
# whose text is the full URL with its query string, and a query string can carry a secret
# (the M-Pesa callback's token).
_NEVER_LOGGED = frozenset({"request"})


class RequestContextFilter(logging.Filter):
    """Puts the request id and the signed-in user's id on every record (request_context)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_context.current_request_id()
        if getattr(record, "user_id", None) is None:
            record.user_id = authenticated_user_id(request_context.current_request())
        return True


def authenticated_user_id(request) -> int | None:
    """The id of the user the request is served for, once something has looked them up.

    Never looks them up itself: that would query the database from inside a log call. Django
    sets request.user lazily (evaluated by the first view or permission check that reads it);
    DRF replaces it with the user its token or session authentication found."""
    user = getattr(request, "__dict__", {}).get("user")
    if isinstance(user, LazyObject):
        user = None if user._wrapped is empty else user._wrapped
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


def extra_fields(record: logging.LogRecord) -> dict:
    """The fields the caller passed in `extra`."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and key not in _CONTEXT and key not in _NEVER_LOGGED
    }


def _jsonable(value):
    """What json.dumps cannot write by itself: Decimals and ids as their exact text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def utc_timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module doc)."""

    def format(self, record: logging.LogRecord) -> str:
        return self.to_json(self.fields(record))

    def fields(self, record: logging.LogRecord) -> dict:
        entry = {
            "time": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        user_id = getattr(record, "user_id", None)
        if user_id is not None:
            entry["user_id"] = user_id
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return entry

    @staticmethod
    def to_json(entry: dict) -> str:
        # ASCII only: a lone surrogate (a message id may hold one) cannot be written as UTF-8,
        # and the handler would drop the whole line.
        return json.dumps(entry, default=_jsonable, ensure_ascii=True)


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger [request_id user=N] message key=value...`, for a terminal (DEBUG on)."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(context)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id, user_id = getattr(record, "request_id", None), getattr(record, "user_id", None)
        context = " ".join(filter(None, [request_id, f"user={user_id}" if user_id is not None else ""]))
        record.context = f"[{context}] " if context else ""
        try:
            line = super().format(record)
        finally:
            del record.context
        extras = " ".join(f"{key}={_jsonable_text(value)}" for key, value in extra_fields(record).items())
        if not extras:
            return line
        first, newline, rest = line.partition("\n")  # a traceback stays below the line it belongs to
        return f"{first} {extras}{newline}{rest}"


def _jsonable_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=_jsonable, ensure_ascii=True)


def logging_settings(*, log_format: str, levels: dict[str, str], root_level: str = "WARNING") -> dict:
    """settings.LOGGING: one handler, on stderr, that every logger's lines reach by propagating.

    `levels` sets each named logger's level. Configuring the "django" logger replaces the
    handlers Django gives it by default, e-mail to ADMINS among them: a server error is
    logged here with its traceback, never only mailed."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_context": {"()": RequestContextFilter}},
        "formatters": {"json": {"()": JsonFormatter}, "plain": {"()": PlainFormatter}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["request_context"]}
        },
        "root": {"handlers": ["console"], "level": root_level},
        "loggers": {name: {"level": level, "propagate": True} for name, level in levels.items()},
    }


def configure(logging_config: dict) -> None:
    """settings.LOGGING_CONFIG: LOGGING as usual, and Python's warnings (a naive datetime, a
    deprecation) logged as lines like any other (logger "py.warnings") instead of printed raw."""
    logging.config.dictConfig(logging_config)
    logging.captureWarnings(True)
