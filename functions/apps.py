from django.apps import AppConfig


class FunctionsConfig(AppConfig):
    name = "functions"
    verbose_name = "HKS Functions"
