"""Liveness: the process is up and serves requests. Load balancers and process managers ask
it; it touches no database, cache or other service, so a dependency's outage never makes a
healthy app server look dead (and get restarted or taken out of rotation for it)."""

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt  # it changes nothing: any other method gets the JSON 405 below, not a CSRF page
@never_cache
def live(request):
    if request.method not in ("GET", "HEAD"):
        refusal = {"code": "method_not_allowed", "message": "GET /health/live/ only."}
        response = JsonResponse({"error": refusal}, status=405)
        response["Allow"] = "GET, HEAD"
        return response
    return JsonResponse({"status": "ok"})
