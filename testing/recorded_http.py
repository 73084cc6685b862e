"""Provider HTTP answered from recorded payloads: nothing leaves the machine.

A `requests` transport adapter answers each (method, URL without query) from a table of
recorded answers (finance/tests/recorded/*.json, each in the shape of the provider's
documentation page it names) and remembers every request sent, so tests check what leaves
the building (URL, auth header, amount units, idempotency reference) as much as how answers
are read.

Two ways in: `session_with(answers)` builds a session to hand to a provider client, and the
`provider_http` fixture (conftest.py) answers the calls made with no session handed in
(webhooks verifying a payment, payout jobs) by replacing finance.providers.base.http_session.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

RECORDED = Path(__file__).resolve().parent.parent / "finance" / "tests" / "recorded"


def recorded(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


def recorded_json(name: str) -> dict:
    """A recorded payload as data, to fill with a test's own reference or amount."""
    return json.loads(recorded(name))


@dataclass
class Sent:
    method: str
    url: str
    headers: CaseInsensitiveDict
    body: bytes
    timeout: object

    @property
    def path_url(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"

    @property
    def query(self) -> dict:
        return parse_qs(urlsplit(self.url).query)

    def json(self):
        return json.loads(self.body)

    def form(self) -> dict:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


class RecordedAdapter(BaseAdapter):
    """Answers each (method, URL without query) from a table; remembers every request sent.

    A table value is (status, body bytes, content type), or an exception instance to raise.
    """

    def __init__(self, answers: dict):
        super().__init__()
        self.answers = answers
        self.sent: list[Sent] = []

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        sent = Sent(request.method, request.url, CaseInsensitiveDict(request.headers), body, timeout)
        self.sent.append(sent)
        answer = self.answers.get((request.method, sent.path_url))
        if answer is None:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        if isinstance(answer, Exception):
            answer.request = request
            raise answer
        status, content, content_type = answer
        response = requests.Response()
        response.status_code = status
        response._content = content
        response.headers = CaseInsensitiveDict({"Content-Type": content_type})
        response.encoding = "utf-8"
        response.url = request.url
        response.request = request
        response.reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 503: "Service Unavailable"}.get(
            status, ""
        )
        return response

    def close(self):
        pass


def session_with(answers: dict) -> tuple[requests.Session, RecordedAdapter]:
    adapter = RecordedAdapter(answers)
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session, adapter


def ok(name: str):
    """A 200 answer with the recorded payload `name`."""
    return (200, recorded(name), "application/json")


def answer(status: int, payload: dict):
    """An answer with `payload` (a recorded shape the test filled in) as JSON."""
    return (status, json.dumps(payload).encode(), "application/json")
