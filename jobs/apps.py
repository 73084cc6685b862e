from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Background jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Every app's tasks.py, so each @job's retry policy and label are known in every
        # process (the portal lists jobs it never runs).
        autodiscover_modules("tasks")
