"""Liveness: the process is up and serves requests. Load balancers and process managers ask
it; it touches no database, cache or other service, so a dependency's outage never makes a
healthy app server look dead (and get restarted or taken out of rotation for it)."""

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe


@never_cache
@require_safe
def live(request):
    return JsonResponse({"status": "ok"})
