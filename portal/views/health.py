"""Health probes, asked by load balancers and process managers of each app server directly.

Liveness (/health/live/): the process is up and serves requests. It touches no database, cache
or other service, so a dependency's outage never makes a healthy app server look dead (and get
restarted or taken out of rotation for it).

Readiness (/health/ready/): may this server take traffic? Each dependency and its state
(portal/health.py): 200 while every required one is ok, 503 with the same body when one is not.
"""

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from portal import health


def _method_not_allowed(path: str) -> JsonResponse:
    refusal = {"code": "method_not_allowed", "message": f"GET {path} only."}
    response = JsonResponse({"error": refusal}, status=405)
    response["Allow"] = "GET, HEAD"
    return response


@csrf_exempt  # it changes nothing: any other method gets the JSON 405 below, not a CSRF page
@never_cache
def live(request):
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed("/health/live/")
    return JsonResponse({"status": "ok"})


@csrf_exempt
@never_cache
def ready(request):
    """{"status": "ready" | "degraded" | "not_ready", "checks": {name: {"state", "required"}}}."""
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed("/health/ready/")
    readiness = health.readiness()
    return JsonResponse(
        {"status": readiness.status, "checks": readiness.states}, status=200 if readiness.ready else 503
    )
