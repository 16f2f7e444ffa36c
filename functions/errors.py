"""The error every layer raises for a request the platform refuses: a leaf, importing nothing else."""


class ServiceError(Exception):
    """A request the platform refuses; ``code`` maps to an HTTP status in the API. ``retry_after`` (seconds)
    says when a refusal over a quota (429) may succeed, for a ``Retry-After`` header."""

    def __init__(self, message: str, *, code: int = 400, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry_after = retry_after
