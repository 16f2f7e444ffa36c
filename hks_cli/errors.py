"""Exit codes of ``hks`` and ``hks-func`` (documented in docs/cli.md) and the error that carries one."""

OK = 0
ERROR = 1
USAGE = 2
NOT_LOGGED_IN = 3  # also: no project selected
PERMISSION_DENIED = 4
NOT_FOUND = 5
CONFLICT = 6
UNREACHABLE = 7
DEPLOY_FAILED = 8  # the build or the start of the new revision failed

STATUS_EXIT = {401: NOT_LOGGED_IN, 403: PERMISSION_DENIED, 404: NOT_FOUND, 409: CONFLICT, 410: NOT_FOUND}


class CliError(Exception):
    """A failure to report in one message and exit with ``code``."""

    def __init__(self, message: str, code: int = ERROR):
        super().__init__(message)
        self.message = message
        self.code = code
