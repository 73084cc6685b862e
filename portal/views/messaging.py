"""Support pages: the live messaging-stats panel (and, with messaging, broadcasts)."""

from django.shortcuts import render
from django.views import View

from finance import permissions

from .base import OperationsView, PermissionRequiredMixin


def stats_snapshot() -> dict:
    """The latest sample and the recent ring from messaging.stats, or why there is none."""
    try:
        from messaging.stats import sample_stats
    except ImportError:
        return {"up": False, "error": "The messaging stats sampler is not installed.", "samples": []}
    try:
        result = sample_stats()
    except Exception as error:  # the panel must say "down", never crash
        return {
            "up": False,
            "error": f"Could not reach the messaging service ({error.__class__.__name__}).",
            "samples": [],
        }
    return normalise(result)


def normalise(result) -> dict:
    """Accept the sampler's shape: a dict with `samples` (a ring) and an up/down flag."""
    if isinstance(result, dict):
        samples = list(result.get("samples") or result.get("ring") or [])
        up = result.get("up", result.get("ok", bool(samples)))
        latest = result.get("latest") or (samples[-1] if samples else None)
        return {
            "up": bool(up) and latest is not None,
            "error": result.get("error", ""),
            "samples": samples,
            "latest": latest,
        }
    samples = list(result or [])
    return {"up": bool(samples), "error": "", "samples": samples, "latest": samples[-1] if samples else None}


class StatsPageView(OperationsView):
    permission_required = permissions.VIEW_MESSAGING_STATS
    page_title = "Messaging stats"
    header_icon = "pick"
    template_name = "portal/stats.html"


class StatsPanelView(PermissionRequiredMixin, View):
    """The htmx-polled fragment: chart data as JSON in a data attribute, and a plain status line."""

    permission_required = permissions.VIEW_MESSAGING_STATS

    def get(self, request):
        return render(request, "portal/includes/stats_panel.html", {"stats": stats_snapshot()})
