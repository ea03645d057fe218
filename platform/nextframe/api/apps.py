from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "nextframe.api"
    label = "api"
    verbose_name = "REST API"

    def ready(self) -> None:
        from nextframe.api import schema  # noqa: F401  (registers the OpenAPI auth extensions)
