from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "nextframe.tenancy"
    label = "tenancy"
    verbose_name = "Organisations and API keys"
