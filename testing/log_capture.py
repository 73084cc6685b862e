"""The portal's own logging configuration, writing to a buffer the test reads.

Not pytest's caplog: that sees records, and the point here is the lines an operator reads —
what settings.LOGGING's handler, filter and formatter make of them (LOG_FORMAT=json or plain).
"""

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from portal.log_format import configure, logging_settings


class CapturedLogs:
    def __init__(self, buffer: io.StringIO):
        self._buffer = buffer

    def text(self) -> str:
        return self._buffer.getvalue()

    def lines(self) -> list[dict]:
        """Every line, parsed: a line that is not a JSON object fails the test here."""
        return [json.loads(line) for line in self.text().splitlines()]

    def from_logger(self, name: str) -> list[dict]:
        return [line for line in self.lines() if line["logger"] == name]


@contextmanager
def captured_logs(log_format: str = "json", *, level: str | None = None) -> Iterator[CapturedLogs]:
    """settings.LOGGING as LOG_FORMAT=`log_format` would make it, into a buffer, for the block.

    `level` lowers (or raises) every logger's level, the root's included: "DEBUG" captures
    every line any library logs."""
    levels = {name: level or default for name, default in settings.LOG_LEVELS.items()}
    config = logging_settings(log_format=log_format, levels=levels, root_level=level or "WARNING")
    buffer = io.StringIO()
    config["handlers"]["console"]["stream"] = buffer
    configure(config)
    try:
        yield CapturedLogs(buffer)
    finally:
        configure(settings.LOGGING)
