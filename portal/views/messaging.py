"""Support pages: the live messaging-stats panel (and, with messaging, broadcasts)."""

from django.shortcuts import render
from django.views import View

from finance import permissions
from messaging.stats import DEFAULT_RANGE, RANGES, read_stats

from .base import OperationsView, PermissionRequiredMixin


def stats_snapshot(range_key: str = DEFAULT_RANGE) -> dict:
    """What the panel shows, read from the cache the sampler job fills (messaging.stats): never
    a call to Erlang. Without a recent sample the chart is left empty rather than shown stale."""
    stats = read_stats(range_key)
    if stats["stale"]:
        return {**stats, "samples": []}
    return stats


class StatsPageView(OperationsView):
    permission_required = permissions.VIEW_MESSAGING_STATS
    page_title = "Messaging stats"
    header_icon = "pick"
    template_name = "portal/stats.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["ranges"] = [(key, label) for key, (label, _seconds) in RANGES.items()]
        context["default_range"] = DEFAULT_RANGE
        return context


class StatsPanelView(PermissionRequiredMixin, View):
    """The htmx-polled fragment: chart data as JSON in a data attribute, the current figures, and
    a plain status line. `range` picks the time window (messaging.stats.RANGES)."""

    permission_required = permissions.VIEW_MESSAGING_STATS

    def get(self, request):
        range_key = request.GET.get("range", DEFAULT_RANGE)
        if range_key not in RANGES:
            choices = ", ".join(RANGES)
            context = {"error": f"Unknown time range “{range_key[:20]}”: choose one of {choices}."}
            return render(request, "portal/includes/stats_panel.html", context, status=400)
        context = {"stats": stats_snapshot(range_key), "range_key": range_key, "range_label": RANGES[range_key][0]}
        return render(request, "portal/includes/stats_panel.html", context)
