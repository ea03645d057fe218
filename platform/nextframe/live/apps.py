from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "nextframe.live"
    label = "live"
