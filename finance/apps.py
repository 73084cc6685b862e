from django.apps import AppConfig


class FinanceConfig(AppConfig):
    name = "finance"
    verbose_name = "Finance"

    def ready(self):
        from . import metrics, services
        from .providers import PROVIDERS, is_enabled

        enabled = [name for name in PROVIDERS if is_enabled(name)]
        metrics.start_counters_at_zero(services.MONEY_OPERATIONS, enabled)
