"""Encryption at rest for secrets the platform must read back, such as a project's kubeconfig.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``). The key is ``HKS_ENCRYPTION_KEY``: one Fernet
key, or several separated by commas to rotate (the first encrypts, all decrypt). Unset, a key is derived
from ``SECRET_KEY`` with HKDF, so that nothing needs configuring - but then rotating ``SECRET_KEY`` makes
stored kubeconfigs unreadable, which ``decrypt_text`` reports as ``DecryptionError``.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class DecryptionError(Exception):
    """The ciphertext was not made with any of the configured keys, or was altered."""


def _derived_key() -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"hks-functions", info=b"encryption-at-rest")
    return base64.urlsafe_b64encode(hkdf.derive(settings.SECRET_KEY.encode()))


def _fernet() -> MultiFernet:
    configured = [k.strip() for k in (settings.HKS_ENCRYPTION_KEY or "").split(",") if k.strip()]
    keys = [k.encode() for k in configured] or [_derived_key()]
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "HKS_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64-encoded bytes), e.g. from "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
        ) from exc


def encrypt_text(text: str) -> str:
    return _fernet().encrypt(text.encode()).decode()


def decrypt_text(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("the stored secret cannot be decrypted with the configured keys") from exc
