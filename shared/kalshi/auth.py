"""Kalshi request signing (kalshi-protocol.md §1): RSA-PSS over ``<ts_ms><METHOD><path>``.

The key never appears in an error, a log line or a repr: failures name the key id only.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["KeyLoadError", "load_private_key", "sign_headers", "string_to_sign"]

# Kalshi: PSS, MGF1-SHA256, salt length = digest length (32 bytes).
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


class KeyLoadError(ValueError):
    """The PEM for ``key_id`` could not be loaded as an RSA private key (fatal at startup)."""

    def __init__(self, key_id: str, reason: str) -> None:
        super().__init__(key_id, reason)
        self.key_id = key_id
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot load RSA private key for API key id {self.key_id}: {self.reason}"


def load_private_key(pem: bytes, key_id: str, password: bytes | None = None) -> rsa.RSAPrivateKey:
    """Load a PEM RSA private key, PKCS#8 (``BEGIN PRIVATE KEY``) or PKCS#1
    (``BEGIN RSA PRIVATE KEY``); both forms exist in the wild.

    Raises:
        KeyLoadError: not PEM, encrypted without the right password, or not RSA. The message
            names ``key_id`` and the reason, never the key material.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # cryptography's messages describe the format, not the content; keep only the class.
        raise KeyLoadError(
            key_id, f"not a readable PEM private key ({type(exc).__name__})"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyLoadError(key_id, f"not an RSA key ({type(key).__name__})")
    return key


def string_to_sign(method: str, path: str, now_ms: int) -> bytes:
    """``<ts_ms><METHOD><path without query>``; the path is from the host root
    (``/trade-api/v2/...`` or ``/trade-api/ws/v2``)."""
    return f"{now_ms}{method.upper()}{path.split('?', 1)[0]}".encode()


def sign_headers(
    key_id: str, private_key: rsa.RSAPrivateKey, method: str, path: str, now_ms: int
) -> dict[str, str]:
    """The three ``KALSHI-ACCESS-*`` headers for one request or WS handshake.

    ``now_ms`` is Unix time in milliseconds (seconds are rejected by Kalshi with 401).
    PSS is randomised: two signatures of one message differ; verify, never compare.
    """
    sig = private_key.sign(string_to_sign(method, path, now_ms), _PSS, hashes.SHA256())
    return {
        "KALSHI-ACCESS-KEY": key_id,
        "KALSHI-ACCESS-TIMESTAMP": str(now_ms),
        "KALSHI-ACCESS-SIGNATURE": base64.b64encode(sig).decode("ascii"),
    }
