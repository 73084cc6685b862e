"""gunicorn's error and access logs: JSON lines like Django's (LOG_FORMAT=json), secrets kept out.

deploy/gunicorn.conf.py names one of these as gunicorn's `logger_class`. They keep gunicorn's
own handlers (stdout or WEB_ACCESS_LOG's file, reopened on SIGUSR1 for logrotate; none when
WEB_ACCESS_LOG is empty) and change only what a line says, which gunicorn's `logconfig_dict`
could not: its handlers are not reopened on SIGUSR1, and it turns the access log on even when
WEB_ACCESS_LOG asks for none.

The access log never holds a secret: the value of a query parameter named like one (the
M-Pesa callback's ?token=) is written as "[redacted]", in both formats.
"""

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

from gunicorn import glogging

from portal.log_format import JsonFormatter, RequestContextFilter

REDACTED = "[redacted]"
SECRET_PARAMETER = re.compile(r"token|secret|passw|signature|key", re.IGNORECASE)


def redact_query(query: str) -> str:
    """`query` with the values of secret-looking parameters replaced."""
    if not query or not SECRET_PARAMETER.search(query):
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(name, REDACTED if SECRET_PARAMETER.search(name) else value) for name, value in pairs], safe="[]")


class Logger(glogging.Logger):
    """gunicorn's plain logger, with secret query parameters redacted from the access log."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        query = redact_query(atoms["q"] or "")
        if query != (atoms["q"] or ""):
            atoms["q"] = query
            atoms["r"] = f"{atoms['m']} {atoms['U']}?{query} {atoms['H']}"
        return atoms


class AccessJsonFormatter(JsonFormatter):
    """An access log line as fields (gunicorn passes its "atoms" as the record's arguments)."""

    def fields(self, record):
        entry = super().fields(record)
        atoms = record.args if isinstance(record.args, Mapping) else {}
        if not atoms:
            return entry
        query = atoms["q"]
        entry.update(
            message=f"{atoms['m']} {atoms['U']} {atoms['s']}",
            # The id Django answered with (its own or the one nginx sent): the same as on every
            # line the request logged.
            request_id=_present(atoms["{x-request-id}o"]),
            remote_addr=atoms["h"],
            method=atoms["m"],
            path=atoms["U"],
            **({"query": query} if query and query != "-" else {}),
            status=_number(atoms["s"]),
            bytes=_number(atoms["B"]),
            duration_ms=round(atoms["D"] / 1000, 3) if isinstance(atoms["D"], int) else None,
            referer=_present(atoms["f"]),
            user_agent=_present(atoms["a"]),
            worker_pid=_number(str(atoms["p"]).strip("<>")),
        )
        return entry


def _present(value):
    return None if value in (None, "-", "") else value


def _number(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class JsonLogger(Logger):
    """gunicorn's logger writing JSON lines (LOG_FORMAT=json)."""

    def setup(self, cfg):
        super().setup(cfg)
        self._use_formatter(self.error_log, JsonFormatter())
        self._use_formatter(self.access_log, AccessJsonFormatter())

    @staticmethod
    def _use_formatter(log, formatter) -> None:
        for handler in log.handlers:
            handler.setFormatter(formatter)
            if not any(isinstance(f, RequestContextFilter) for f in handler.filters):
                handler.addFilter(RequestContextFilter())
