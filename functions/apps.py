from django.apps import AppConfig


class FunctionsConfig(AppConfig):
    name = "functions"
    verbose_name = "HKS Functions"

    def ready(self):
        from functions.auth import login_guard  # noqa: F401  (its signal receivers count failed sign-ins)
