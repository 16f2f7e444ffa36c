"""The error every layer raises for a request the platform refuses: a leaf, importing nothing else."""


class ServiceError(Exception):
    """A request the platform refuses; ``code`` maps to an HTTP status in the API."""

    def __init__(self, message: str, *, code: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
