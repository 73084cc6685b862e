"""GET /metrics: the Prometheus exposition (portal/metrics.py), for whoever holds METRICS_TOKEN.

Prometheus scrapes each app server directly (its address, not the load balancer's), sending
`Authorization: Bearer <METRICS_TOKEN>`. Anything else is a JSON 401: the figures say how much
money waits and what fails, which is nobody else's business.
"""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from portal.metrics import exposition

from .health import read_only_endpoint


def _bearer_token(request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _refusal(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


@read_only_endpoint
def metrics(request):
    token = _bearer_token(request)
    # An empty METRICS_TOKEN (possible only with DEBUG on and the variable set empty) opens nothing.
    if not (token and settings.METRICS_TOKEN and constant_time_compare(token, settings.METRICS_TOKEN)):
        response = _refusal(401, "not_authenticated", "Send Authorization: Bearer <METRICS_TOKEN>.")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    # The classic text format (0.0.4): what generate_latest writes, read by every Prometheus.
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
