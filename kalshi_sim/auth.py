"""Kalshi request authentication: key registry, signature verification, throwaway keys.

Kalshi signs ``<timestamp_ms><METHOD><path without query>`` with RSA-PSS (SHA-256, MGF1-SHA-256,
salt = digest length) and sends it base64 in ``KALSHI-ACCESS-SIGNATURE`` next to
``KALSHI-ACCESS-KEY`` and ``KALSHI-ACCESS-TIMESTAMP`` (kalshi-protocol.md §1). PSS signatures are
randomised, so we verify rather than compare.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

H_KEY = "KALSHI-ACCESS-KEY"
H_TS = "KALSHI-ACCESS-TIMESTAMP"
H_SIG = "KALSHI-ACCESS-SIGNATURE"
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


class AuthError(Exception):
    """A rejected request; ``reason`` is a stable slug used in counters and messages."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class KeyEntry:
    key_id: str
    public_key: rsa.RSAPublicKey
    tier: str | None  # rate-limit tier; None = simulator default


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Accepts PKCS#8 ``PUBLIC KEY``, PKCS#1 ``RSA PUBLIC KEY``, or a private key PEM."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"PRIVATE KEY" in data:
        priv = serialization.load_pem_private_key(data, password=None)
        key = priv.public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("not an RSA key")
    return key


def sign(private_pem: str | bytes, ts_ms: str, method: str, path: str) -> str:
    """Client-side helper (tests, demo): the signature header value for one request."""
    data = private_pem.encode() if isinstance(private_pem, str) else private_pem
    key = serialization.load_pem_private_key(data, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    msg = (ts_ms + method.upper() + path.split("?", 1)[0]).encode()
    return base64.b64encode(key.sign(msg, PSS, hashes.SHA256())).decode()


def auth_headers(key_id: str, private_pem: str | bytes, method: str, path: str,
                 now_ms: int) -> dict[str, str]:
    ts = str(now_ms)
    return {H_KEY: key_id, H_TS: ts, H_SIG: sign(private_pem, ts, method, path)}


def keygen(pkcs1: bool = False, bits: int = 2048) -> tuple[str, str, str]:
    """New throwaway key: (key_id, private_pem, public_pem). ``pkcs1`` picks the PEM flavour."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    fmt = serialization.PrivateFormat.TraditionalOpenSSL if pkcs1 else \
        serialization.PrivateFormat.PKCS8
    priv = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    pub_fmt = serialization.PublicFormat.PKCS1 if pkcs1 else \
        serialization.PublicFormat.SubjectPublicKeyInfo
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, pub_fmt)
    return str(uuid.uuid4()), priv.decode(), pub.decode()


def write_keypair(directory: str | Path, pkcs1: bool = False) -> tuple[str, Path]:
    """``kalshi-sim keygen``: writes ``<id>.key`` (private) and ``<id>.pub.pem`` into
    ``directory`` (the simulator registers every ``*.pub.pem`` there via ``--key-dir``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key_id, priv, pub = keygen(pkcs1=pkcs1)
    priv_path = d / f"{key_id}.key"
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(priv)
    (d / f"{key_id}.pub.pem").write_text(pub)
    return key_id, priv_path


class KeyRegistry:
    """key id -> public key, plus the verification rules of one simulator instance."""

    def __init__(self, skew_window_ms: int = 10_000) -> None:
        self.skew_window_ms = skew_window_ms
        self._keys: dict[str, KeyEntry] = {}

    def register(self, key_id: str, public_pem: str | bytes, tier: str | None = None) -> None:
        self._keys[key_id] = KeyEntry(key_id, load_public_key(public_pem), tier)

    def load_dir(self, directory: str | Path) -> int:
        n = 0
        for p in sorted(Path(directory).glob("*.pub.pem")):
            self.register(p.name[: -len(".pub.pem")], p.read_bytes())
            n += 1
        return n

    def get(self, key_id: str) -> KeyEntry | None:
        return self._keys.get(key_id)

    def has_headers(self, headers: Mapping[str, str]) -> bool:
        return any(h in headers for h in (H_KEY, H_TS, H_SIG))

    def verify(self, headers: Mapping[str, str], method: str, path: str,
               now_ms: int) -> KeyEntry:
        """Return the key that signed this request or raise :class:`AuthError`.

        ``now_ms`` is the server's idea of now (wall clock plus any injected skew).
        """
        get = headers.get
        key_id, ts, sig = get(H_KEY), get(H_TS), get(H_SIG)
        if not key_id or not ts or not sig:
            raise AuthError("missing_headers")
        entry = self._keys.get(key_id)
        if entry is None:
            raise AuthError("unknown_key")
        if not ts.isdigit():
            raise AuthError("bad_timestamp")
        if abs(int(ts) - now_ms) > self.skew_window_ms:
            raise AuthError("stale_timestamp")
        try:
            raw = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            raise AuthError("bad_signature") from None
        msg = (ts + method.upper() + path.split("?", 1)[0]).encode()
        try:
            entry.public_key.verify(raw, msg, PSS, hashes.SHA256())
        except InvalidSignature:
            raise AuthError("bad_signature") from None
        return entry
