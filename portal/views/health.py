"""Health probes, asked by load balancers and process managers of each app server directly.

Liveness (/health/live/): the process is up and serves requests. It touches no database, cache
or other service, so a dependency's outage never makes a healthy app server look dead (and get
restarted or taken out of rotation for it).

Readiness (/health/ready/): may this server take traffic? Each dependency and its state
(portal/health.py): 200 while every required one is ok, 503 with the same body when one is not.
"""

import functools

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from portal import health


def read_only_endpoint(view):
    """For the endpoints machines ask (probes, metrics): GET and HEAD only, any other method a
    JSON 405 (not a CSRF page: they change nothing), never cached."""

    @csrf_exempt
    @never_cache
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method not in ("GET", "HEAD"):
            refusal = {"code": "method_not_allowed", "message": f"GET {request.path} only."}
            response = JsonResponse({"error": refusal}, status=405)
            response["Allow"] = "GET, HEAD"
            return response
        return view(request, *args, **kwargs)

    return wrapper


@read_only_endpoint
def live(request):
    return JsonResponse({"status": "ok"})


@read_only_endpoint
def ready(request):
    """{"status": "ready" | "degraded" | "not_ready", "checks": {name: {"state", "required"}}}."""
    readiness = health.readiness()
    return JsonResponse(
        {"status": readiness.status, "checks": readiness.states}, status=200 if readiness.ready else 503
    )
