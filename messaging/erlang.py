"""The Django side's only door to the Erlang messaging service.

`erlang_client` (contract): send_message, broadcast_message, get_user_messages,
health_check, plus ack_messages and stats. One pooled `requests` session with short
timeouts; every failure becomes `ErlangUnavailable` (could not reach it, or it is
overloaded: the caller may fall back) or `ErlangRejected` (it refused our request: a bug
or bad input, no point retrying). Nothing here ever hangs a request.

Every call carries X-Request-Id: the id of the request (or job) being served, or a new one
for a call made outside any, so the messaging service's lines and the persistence callback
that stores the message can be traced back to it. While MESSAGING_SHARED_SECRET rotates, a
node not restarted yet answers 401 to the new secret: the call is retried once with
MESSAGING_SHARED_SECRET_PREVIOUS.
"""

import hashlib
import hmac
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

import request_context

logger = logging.getLogger("messaging.erlang")

CONNECT_TIMEOUT = 0.5
READ_TIMEOUT = 3.0
TOKEN_HEADER = "X-Messaging-Token"
REQUEST_ID_HEADER = "X-Request-Id"


class ErlangError(Exception):
    pass


class ErlangUnavailable(ErlangError):
    """The service could not be reached, timed out, or answered 5xx/503 overload."""


class ErlangRejected(ErlangError):
    """The service answered 4xx: our request was wrong."""

    def __init__(self, message, status=400, body=None):
        super().__init__(message)
        self.status = status
        self.body = body or {}


class ErlangMessagingClient:
    def __init__(self, base_url: str | None = None, secret: str | None = None, previous_secret: str | None = None):
        self._base_url = base_url
        self._secret = secret
        self._previous_secret = previous_secret
        self._local = threading.local()

    # Settings are read at call time so tests and deployments can point elsewhere.
    @property
    def base_url(self) -> str:
        return (self._base_url or settings.ERLANG_MESSAGING_URL).rstrip("/")

    @property
    def secret(self) -> str:
        return self._secret or settings.MESSAGING_SHARED_SECRET

    @property
    def previous_secret(self) -> str:
        return settings.MESSAGING_SHARED_SECRET_PREVIOUS if self._previous_secret is None else self._previous_secret

    @property
    def session(self) -> requests.Session:
        # One keep-alive pool per thread: requests sessions are not documented as thread-safe.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0))
            self._local.session = session
        return session

    # --- the contract: the calls Django code makes --------------------------------------------

    def send_message(
        self, conversation_id, sender_id, receiver_id, text, priority="normal", *, message_id=None
    ) -> dict:
        """Hand a message to Erlang; answers {"id", "status": "accepted", "dropped"} once it is durable."""
        body = {
            "id": str(message_id or uuid.uuid4()),
            "conversation_id": conversation_id,
            "sender_id": sender_id,
            "receiver_id": receiver_id,
            "text": text,
            "priority": priority,
        }
        return self._request("POST", "/messages", json=body)

    def broadcast_message(self, sender_id, user_ids, text, priority="normal", *, broadcast_id=None, audience=None):
        body = {"sender_id": sender_id, "user_ids": list(user_ids), "text": text, "priority": priority}
        if broadcast_id:
            body["id"] = str(broadcast_id)
        if audience:
            body["audience"] = audience
        return self._request("POST", "/broadcast", json=body, read_timeout=10.0)

    def get_user_messages(self, user_id) -> list[dict]:
        """The user's queued messages, oldest first."""
        return self._request("GET", f"/queues/{int(user_id)}").get("messages", [])

    def ack_messages(self, user_id, ids) -> int:
        body = self._request("POST", f"/queues/{int(user_id)}/ack", json={"ids": [str(i) for i in ids]})
        return body.get("acknowledged", 0)

    def health_check(self) -> bool:
        try:
            return self._request("GET", "/health", authenticated=False).get("status") == "ok"
        except ErlangError:
            return False

    def health(self) -> dict:
        return self._request("GET", "/health", authenticated=False)

    def stats(self) -> dict:
        return self._request("GET", "/stats")

    # --- plumbing --------------------------------------------------------------------------------

    def _request(self, method, path, *, json=None, authenticated=True, read_timeout=READ_TIMEOUT) -> dict:
        headers = {REQUEST_ID_HEADER: request_context.current_request_id() or request_context.new_request_id()}
        if not authenticated:
            return self._answer(self._send(method, path, json, headers, read_timeout), method, path)
        response = self._send(method, path, json, {**headers, TOKEN_HEADER: self.secret}, read_timeout)
        if response.status_code == 401 and self.previous_secret:
            # A node still on the previous secret (a rotation under way). It refused before taking
            # anything, so sending the call again cannot deliver a message twice.
            logger.warning(
                "messaging service at %s refused MESSAGING_SHARED_SECRET; retrying %s %s with "
                "MESSAGING_SHARED_SECRET_PREVIOUS (restart the node with the new secret)",
                self.base_url,
                method,
                path,
            )
            response = self._send(method, path, json, {**headers, TOKEN_HEADER: self.previous_secret}, read_timeout)
        return self._answer(response, method, path)

    def _send(self, method, path, json, headers, read_timeout) -> requests.Response:
        started = time.monotonic()
        try:
            return self.session.request(
                method, self.base_url + path, json=json, headers=headers, timeout=(CONNECT_TIMEOUT, read_timeout)
            )
        except requests.RequestException as error:
            # Where it was and why go to the log; the error's text is shown to staff and callers.
            logger.warning("messaging service unreachable at %s: %r", self.base_url, error)
            raise ErlangUnavailable("The messaging service could not be reached.") from None
        finally:
            logger.debug("erlang %s %s took %.1f ms", method, path, 1000 * (time.monotonic() - started))

    def _answer(self, response: requests.Response, method, path) -> dict:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 500:
            logger.warning("messaging service answered %s to %s %s", response.status_code, method, path)
            raise ErlangUnavailable("The messaging service is unavailable or overloaded.")
        if response.status_code >= 400:
            message = (body.get("error") or {}).get("message", "") if isinstance(body, dict) else ""
            raise ErlangRejected(
                f"Messaging service refused the request ({response.status_code}): {message}", response.status_code, body
            )
        return body if isinstance(body, dict) else {"data": body}


@dataclass(frozen=True)
class WebSocketToken:
    """A token for the Erlang /ws endpoint and how long it lives.

    The service closes a session when its token expires, unless the client sent a fresh
    one first (`{"type": "auth", "token": ...}` on the socket)."""

    token: str
    expires_at: int  # unix seconds; the token is refused from this second on
    expires_in: int  # seconds from now: at least this long, never less


def issue_websocket_token(user_id: int, lifetime_seconds: int | None = None) -> WebSocketToken:
    """A token `<user>.<expiry>.<hmac-sha256 hex>` living WS_TOKEN_TTL_SECONDS (or the given lifetime)."""
    lifetime = settings.WS_TOKEN_TTL_SECONDS if lifetime_seconds is None else lifetime_seconds
    # Rounded up to the next whole second, so the token lives at least `lifetime` seconds and a
    # client that renews at a share of expires_in is always in time.
    expires = math.ceil(time.time()) + lifetime
    payload = f"{int(user_id)}.{expires}"
    signature = hmac.new(settings.MESSAGING_SHARED_SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return WebSocketToken(token=f"{payload}.{signature}", expires_at=expires, expires_in=lifetime)


def websocket_token(user_id: int, lifetime_seconds: int | None = None) -> str:
    """Just the token of issue_websocket_token()."""
    return issue_websocket_token(user_id, lifetime_seconds).token


def websocket_url() -> str:
    base = settings.ERLANG_MESSAGING_PUBLIC_URL or settings.ERLANG_MESSAGING_URL
    return base.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + "/ws"


erlang_client = ErlangMessagingClient()
