"""Signing: RSA-PSS/SHA-256 headers verify with `cryptography` for PKCS#1 and PKCS#8 keys."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from shared.kalshi.auth import KeyLoadError, load_private_key, sign_headers, string_to_sign

KEY_ID = "a952bcbe-ec3b-4b5b-b8f9-11dae589608c"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _verify(key: rsa.RSAPrivateKey, headers: dict[str, str], message: bytes) -> None:
    key.public_key().verify(
        base64.b64decode(headers["KALSHI-ACCESS-SIGNATURE"], validate=True),
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


@pytest.mark.parametrize(
    "fmt", [serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8]
)
def test_sign_verify_round_trip(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> None:
    pem = _pem(key, fmt)
    assert (b"BEGIN RSA PRIVATE KEY" in pem) is (
        fmt is serialization.PrivateFormat.TraditionalOpenSSL
    )
    loaded = load_private_key(pem, KEY_ID)
    h = sign_headers(KEY_ID, loaded, "get", "/trade-api/v2/portfolio/orders?limit=5", 1703123456789)
    assert h["KALSHI-ACCESS-KEY"] == KEY_ID
    assert h["KALSHI-ACCESS-TIMESTAMP"] == "1703123456789"
    _verify(key, h, b"1703123456789GET/trade-api/v2/portfolio/orders")  # query not signed
    with pytest.raises(InvalidSignature):
        _verify(key, h, b"1703123456789GET/trade-api/v2/portfolio/orders?limit=5")


def test_ws_handshake_string() -> None:
    assert string_to_sign("GET", "/trade-api/ws/v2", 1) == b"1GET/trade-api/ws/v2"


def test_pss_is_randomised(key: rsa.RSAPrivateKey) -> None:
    a = sign_headers(KEY_ID, key, "GET", "/x", 5)["KALSHI-ACCESS-SIGNATURE"]
    b = sign_headers(KEY_ID, key, "GET", "/x", 5)["KALSHI-ACCESS-SIGNATURE"]
    assert a != b


def test_load_failures_name_the_key_id_never_the_key(key: rsa.RSAPrivateKey) -> None:
    pem = _pem(key, serialization.PrivateFormat.PKCS8)
    broken = pem[:200] + b"AAAA" + pem[204:]
    for bad in (b"", b"not a pem", broken):
        with pytest.raises(KeyLoadError) as ei:
            load_private_key(bad, KEY_ID)
        text = str(ei.value) + repr(ei.value)
        assert KEY_ID in text
        assert "PRIVATE KEY" not in text and pem[40:80].decode() not in text
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyLoadError, match="not an RSA key"):
        load_private_key(ec_pem, KEY_ID)
