"""One JSON error shape for the whole API: {"error": {"code", "message", "fields"}}."""

from rest_framework.views import exception_handler


def api_exception_handler(exc, context):
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    fields = detail if isinstance(detail, dict) and "detail" not in detail else {}
    message = detail.get("detail") if isinstance(detail, dict) else detail
    code = getattr(exc, "default_code", "error")
    response.data = {"error": {"code": code, "message": str(message or "Invalid input."), "fields": fields}}
    return response
