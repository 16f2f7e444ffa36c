"""Secret environment variables: write-only values, encrypted at rest, masked wherever the portal shows text.

A function's ``secret_env`` maps each secret's name to its value encrypted with ``functions.crypto``
(Fernet, ``HKS_ENCRYPTION_KEY``). Names are readable by everyone who can see the function; values are
decrypted only to hand them to the backend (``service_spec``) and to mask them in log lines
(``log_source``). No page, API answer or audit entry carries a value. On Knative they become a ``Secret``
the Service's container reads with ``secretKeyRef`` (``k8s_manifests.env_secret``).
"""

from __future__ import annotations

import dataclasses
import hashlib

from functions.backends import BackendError, get_backend
from functions.crypto import DecryptionError, decrypt_text, encrypt_text

MASK = "********"
MIN_MASKED_LENGTH = 4  # shorter values ("1", "on") would mask half of every line; they are not secrets
MAX_SECRET_BYTES = 32 * 1024


def secret_names(function) -> list[str]:
    return sorted(function.secret_env or {})


def secret_values(function) -> dict[str, str]:
    return {name: decrypt_text(token) for name, token in (function.secret_env or {}).items()}


def secret_env_updated(current: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    """The stored form after ``changes``: a value sets (encrypted), ``None`` removes."""
    stored = dict(current or {})
    for name, value in changes.items():
        if value is None:
            stored.pop(name, None)
        else:
            stored[name] = encrypt_text(value)
    return stored


def secret_env_version(function) -> str:
    """Changes whenever a secret is written (Fernet ciphertexts are fresh each time) and says nothing about
    the values: a Knative template annotation, so new values roll out as a new revision."""
    stored = function.secret_env or {}
    if not stored:
        return ""
    return hashlib.sha256("\n".join(f"{k}={stored[k]}" for k in sorted(stored)).encode()).hexdigest()[:16]


def mask(text: str, values) -> str:
    for value in sorted((v for v in values if len(v) >= MIN_MASKED_LENGTH), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


class MaskedLogs:
    """A backend's ``logs`` with the function's secret values masked in every line's text."""

    def __init__(self, backend, values):
        self._backend = backend
        self._values = list(values)

    async def logs(self, ref, **kwargs):
        async for line in self._backend.logs(ref, **kwargs):
            if self._values:
                line = dataclasses.replace(line, text=mask(line.text, self._values))
            yield line


def log_source(function) -> MaskedLogs:
    """Where every reader of a function's logs (page, download, API, stream, websocket) gets them."""
    try:
        values = secret_values(function)
    except DecryptionError as exc:  # showing the lines unmasked is not an option
        raise BackendError(f"{exc} (HKS_ENCRYPTION_KEY changed?)", permanent=True) from exc
    return MaskedLogs(get_backend(function.project), values.values())
