from django.apps import AppConfig


class MetricsConfig(AppConfig):
    name = "metrics"
    verbose_name = "Metrics"

    def ready(self) -> None:
        # Steward's own figures join django-prometheus' in the default registry (/metrics).
        from .collector import register

        register()
