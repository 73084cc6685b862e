"""One confirmation for every state change: a signed token binds what the user was shown.

A view that changes state mixes in `ConfirmationMixin` and is routed twice: at its
confirmation URL (`as_view(confirming=True)`, GET or POST) it shows what will happen,
through `templates/portal/includes/confirmation.html`, with a token; at its action URL it
acts only on a POST whose token is valid, unexpired, issued to this user for this action
and target, and bound to exactly the values the POST asks for. Anything else changes
nothing: the user gets the confirmation again (with a fresh token) and a 400.

The token (`django.core.signing`, salted, 15 minutes) also carries the idempotency key the
action passes to the staff action, so a double submit of one confirmation acts once.
"""

import json
from dataclasses import dataclass, field

from django.core import signing

from finance.errors import TransactionError

from .base import new_idempotency_key

SALT = "portal.confirmation"
MAX_AGE_SECONDS = 15 * 60
TOKEN_FIELD = "confirmation_token"


class ConfirmationRefused(Exception):
    """The POST carried no token, or one that does not confirm what it asks for."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def issue_token(*, user, action: str, target, params: dict, key: str) -> str:
    """A token confirming `action` on `target` with exactly `params`, for `user`, with idempotency `key`."""
    return signing.dumps(
        {"user": user.pk, "action": action, "target": str(target), "params": params, "key": key}, salt=SALT
    )


def verify_token(token: str, *, user, action: str, target, params: dict) -> str:
    """The idempotency key the token carries, or ConfirmationRefused saying what is wrong with it."""
    if not token:
        raise ConfirmationRefused("Nothing has been confirmed yet: check what will happen below, then confirm.")
    try:
        data = signing.loads(token, salt=SALT, max_age=MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise ConfirmationRefused("This confirmation has expired. Check what will happen below and confirm again.")
    except signing.BadSignature:
        raise ConfirmationRefused("This confirmation is not valid. Check what will happen below and confirm again.")
    if not isinstance(data, dict) or data.get("user") != user.pk:
        raise ConfirmationRefused("This confirmation was issued to someone else. Check below and confirm yourself.")
    if data.get("action") != action or data.get("target") != str(target):
        raise ConfirmationRefused("This confirmation was for something else. Check below and confirm this one.")
    if data.get("params") != params:
        raise ConfirmationRefused(
            "What was sent differs from what was confirmed. Check what will happen below and confirm again."
        )
    return data["key"]


def clean_text(text) -> str:
    """Typed text as it is bound and acted on: one kind of line break (forms send CRLF), no outer blanks."""
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()


@dataclass
class Confirmation:
    """What `templates/portal/includes/confirmation.html` shows: the question, exactly what will
    happen, and a "Yes, ..." button that posts the confirmed values and the token, and Cancel."""

    label: str  # names the group for assistive technology, e.g. "Confirm refund"
    question: str  # "Refund NGN 300.00 to guest3?"
    effects: list[str]  # each consequence; amounts through finance.money.format_money
    yes: str  # "Yes, refund"
    url: str  # the action URL the Yes button posts to
    fields: list[tuple[str, object]] = field(default_factory=list)  # posted with it: the confirmed values
    quote: str = ""  # text the user typed (reason, note, message), shown as typed
    quote_label: str = ""
    approval: str = ""  # the four-eyes sentence, when a second approver will be needed
    danger: bool = False  # the Yes button in Wagtail's destructive style
    cancel_url: str = ""  # Cancel as a link (full pages), or...
    cancel_get: str = ""  # ...an htmx GET whose answer replaces `target`, or...
    cancel_focus: str = ""  # ...a dismissal that returns focus to this selector
    target: str = ""  # set: the Yes button posts with htmx and its answer replaces this element
    swap: str = "outerHTML"
    small: bool = False  # inside a table row or a toolbar
    error: str = ""  # why the last attempt was refused
    id: str = ""

    @property
    def hx_vals(self) -> str:
        values: dict[str, list] = {}
        for name, value in self.fields:
            values.setdefault(name, []).append(value)
        return json.dumps({name: v[0] if len(v) == 1 else v for name, v in values.items()})


class ConfirmationMixin:
    """Confirm, then act: the view's state change happens only for a POST carrying a token that
    confirms exactly it.

    The view provides:
      confirmation_action            the action's name, bound into the token
      get_confirmation_params()      the exact values the action will use, read from the request
                                     (and the target, which it may load): JSON values compared as
                                     they are; raises TransactionError for input the action refuses
      get_confirmation_target()      what it acts on (a primary key), after the params
      describe_confirmation(params)  a Confirmation: what the user is shown
      render_confirmation(confirmation, status)  the response that shows it (a page, a row)
      render_invalid(error)          the input again, with the error (a 400)
      perform(params, key)           the action itself; `key` is the idempotency key
    """

    confirming = False  # as_view(confirming=True) at the confirmation URL
    confirmation_action = ""

    def get_confirmation_params(self) -> dict:
        return {}

    def get_confirmation_target(self):
        raise NotImplementedError

    def describe_confirmation(self, params: dict) -> Confirmation:
        raise NotImplementedError

    def render_confirmation(self, confirmation: Confirmation, status: int):
        raise NotImplementedError

    def render_invalid(self, error: TransactionError):
        raise NotImplementedError

    def perform(self, params: dict, key: str):
        raise NotImplementedError

    def get(self, request, *args, **kwargs):
        if self.confirming:
            return self.confirm()
        parent = getattr(super(), "get", None)
        if parent is None:
            return self.http_method_not_allowed(request, *args, **kwargs)
        return parent(request, *args, **kwargs)

    def post(self, request, *args, **kwargs):
        if self.confirming:
            return self.confirm()
        try:
            params = self.get_confirmation_params()
        except TransactionError as error:
            return mark_confirmation(self.render_invalid(error))
        try:
            key = verify_token(
                request.POST.get(TOKEN_FIELD, ""),
                user=request.user,
                action=self.confirmation_action,
                target=self.get_confirmation_target(),
                params=params,
            )
        except ConfirmationRefused as refusal:
            return self.show_confirmation(params, refusal=refusal)
        return self.perform(params, key)

    def confirm(self):
        """Show the confirmation; nothing changes."""
        try:
            params = self.get_confirmation_params()
        except TransactionError as error:
            return mark_confirmation(self.render_invalid(error))
        return self.show_confirmation(params)

    def show_confirmation(self, params: dict, *, refusal: ConfirmationRefused | None = None):
        token = issue_token(
            user=self.request.user,
            action=self.confirmation_action,
            target=self.get_confirmation_target(),
            params=params,
            key=new_idempotency_key(),
        )
        confirmation = self.describe_confirmation(params)
        confirmation.fields = [*confirmation.fields, (TOKEN_FIELD, token)]
        confirmation.id = confirmation.id or "confirm-" + self.confirmation_action.replace(".", "-")
        if refusal is not None:
            confirmation.error = refusal.message
        response = self.render_confirmation(confirmation, refusal.status if refusal else 200)
        return mark_confirmation(response)


def mark_confirmation(response):
    """Tell portal.js to show this answer even when it is a 4xx (a refusal carrying the confirmation again)."""
    response["X-Confirmation"] = "shown"
    return response
