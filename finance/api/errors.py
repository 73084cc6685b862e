"""One JSON error shape for the whole API: {"error": {"code", "message", "fields"}}.

Service errors (`TransactionError`) keep their own code and status; DRF's and Django's
errors are reshaped; unknown URLs under /api/ answer JSON too (see `api_not_found`).
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from finance.errors import NotFoundError, PermissionDeniedError, TransactionError


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def api_exception_handler(exc, context):
    if isinstance(exc, TransactionError):
        return _service_error(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    response.data = _reshape(exc, response.data)
    return response


def _service_error(exc: TransactionError) -> Response:
    fields = {}
    if "field" in exc.details:
        fields[exc.details["field"]] = [exc.message]
    http_status = exc.status
    if isinstance(exc, NotFoundError):
        http_status = status.HTTP_404_NOT_FOUND
    elif isinstance(exc, PermissionDeniedError):
        http_status = status.HTTP_403_FORBIDDEN
    # A refusal that passes with time (a checkout in progress) says when to ask again.
    headers = {"Retry-After": str(exc.details["retry_after"])} if "retry_after" in exc.details else None
    return Response(error_body(exc.code, exc.message, fields), status=http_status, headers=headers)


def _reshape(exc, data) -> dict:
    code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    if isinstance(exc, exceptions.ValidationError):
        fields = data if isinstance(data, dict) else {"non_field_errors": data}
        first = next(iter(fields.values()), ["Invalid input."])
        message = first[0] if isinstance(first, list) and first else str(first)
        name = next(iter(fields), "")
        return error_body(
            "invalid", f"{name}: {message}" if name and name != "non_field_errors" else str(message), fields
        )
    message = data.get("detail", "Request refused.") if isinstance(data, dict) else str(data)
    return error_body(code if isinstance(code, str) else "error", str(message))


def api_not_found(request, exception=None):
    """handler404 for the API: JSON instead of the HTML page (portal/urls.py uses it under /api/)."""
    return JsonResponse(error_body("not_found", f"No API endpoint at {request.path}."), status=404)


def api_server_error(request):
    return JsonResponse(
        error_body("server_error", "Something went wrong on our side; nothing was changed."), status=500
    )
