from django.apps import AppConfig


class AuditsConfig(AppConfig):
    name = "nextframe.audits"
    label = "audits"
