"""Streamed CSV downloads with spreadsheet formulas neutralised."""

import csv
import re

from django.http import StreamingHttpResponse

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def neutralise(value) -> str:
    """A cell a spreadsheet will show as text, never run as a formula (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    if PLAIN_NUMBER.fullmatch(text):  # a negative amount is a number, not a formula
        return text
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


class _Echo:
    def write(self, value):
        return value


def stream_csv(filename: str, header: list[str], rows) -> StreamingHttpResponse:
    """`rows` is any iterable of sequences; it is consumed lazily while the response streams."""
    writer = csv.writer(_Echo())

    def generate():
        yield writer.writerow([neutralise(h) for h in header])
        for row in rows:
            yield writer.writerow([neutralise(cell) for cell in row])

    response = StreamingHttpResponse(generate(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
