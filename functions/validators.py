"""Validators shared by models, forms and the API."""

import re
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ValidationError

DNS_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def validate_dns_label(value: str) -> None:
    """A DNS-1123 label that also starts with a letter, as Knative requires of service names."""
    if not DNS_LABEL_RE.match(value or ""):
        raise ValidationError(
            "%(value)r is not a valid name: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit.",
            params={"value": value},
            code="invalid_dns_label",
        )


def validate_env_name(value: str) -> None:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value or ""):
        raise ValidationError("%(value)r is not a valid environment variable name.", params={"value": value})


def check_function_path(path: str) -> str:
    """A request path on a function: starts with '/', no scheme or host, no control characters, no '.' or
    '..' segments (even encoded) - so it can never reach another host or another function. Raises
    ValueError with the reason."""
    parts = urlsplit(path)
    if (
        not path.startswith("/")
        or path.startswith("//")
        or parts.scheme
        or parts.netloc
        or "\\" in path
        or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in path)
    ):
        raise ValueError(
            "path must be a path on the function starting with '/', without scheme, host or spaces"
        )
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        raise ValueError("path must not contain '.' or '..' segments")
    return path
