"""Support pages: the live messaging-stats panel (and, with messaging, broadcasts)."""

from django.shortcuts import render
from django.views import View

from finance import permissions
from messaging.stats import read_stats

from .base import OperationsView, PermissionRequiredMixin


def stats_snapshot() -> dict:
    """What the panel shows, read from the cache the sampler job fills (messaging.stats): never
    a call to Erlang. Without a recent sample the chart is left empty rather than shown stale."""
    stats = read_stats()
    if stats["stale"]:
        return {**stats, "samples": []}
    return stats


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
