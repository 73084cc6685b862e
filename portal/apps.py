from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Operations portal"

    def ready(self):
        # The audit log's receivers: sign-ins, sign-outs, failed sign-ins and lockouts.
        from . import audit_events  # noqa: F401
