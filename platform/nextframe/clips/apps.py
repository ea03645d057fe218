from django.apps import AppConfig


class ClipsConfig(AppConfig):
    name = "nextframe.clips"
    label = "clips"
