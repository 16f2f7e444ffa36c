from django.apps import AppConfig


class FunctionsConfig(AppConfig):
    name = "functions"
    verbose_name = "HKS Functions"

    def ready(self):
        from django.db.backends.signals import connection_created

        from functions.auth import login_guard  # noqa: F401  (its signal receivers count failed sign-ins)
        from hks_portal.sqlite_wal import hold_log_open

        connection_created.connect(hold_log_open, dispatch_uid="hks-sqlite-hold-log-open")
