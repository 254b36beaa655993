"""Snowflake key-pair keys: PEM -> PKCS#8 DER and the fingerprint Snowflake shows (pure).

Decrypting an encrypted key runs the key derivation its owner chose: its cost is read from
the key and capped before anything is derived.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from typing import Any

from warehouse_operator.models import ProbeFailure, Reason


def public_key_fingerprint(private_key: Any) -> str:
    """``SHA256:`` + base64 of the SHA-256 of the DER SubjectPublicKeyInfo.

    This is what Snowflake shows as ``RSA_PUBLIC_KEY_FP`` in ``DESCRIBE USER``.
    """
    from cryptography.hazmat.primitives import serialization

    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


# PBKDF2 iterations, or scrypt N*r*p. cryptography holds the GIL while it derives, so this is
# also how long one test of such a key may stall the event loop: about 0.03 s at the cap
# (100 times OpenSSL's default of 2,048 iterations); a parsed key is kept per Secret version.
MAX_KDF_COST = 200_000
_SCRYPT_OID = bytes.fromhex("2b06010401da47040b")


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, value) items of a DER sequence's content."""
    items, i = [], 0
    while i < len(data):
        tag, size = data[i], data[i + 1]
        i += 2
        if size & 0x80:
            count = size & 0x7F
            size = int.from_bytes(data[i : i + count], "big")
            i += count
        items.append((tag, data[i : i + size]))
        i += size
    return items


def _pkcs8_kdf_cost(pem: bytes) -> int | None:
    """The work factor of an encrypted PKCS#8 key's key derivation, read without decrypting.

    PBES2/PBKDF2 and PKCS#12 PBE: the iteration count; scrypt: N*r*p. None if unreadable.
    """
    try:
        body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
        (outer,) = [v for t, v in _der_items(base64.b64decode(body)) if t == 0x30]
        algorithm = _der_items(outer)[0][1]  # AlgorithmIdentifier of the encryption
        return _cost_in(algorithm)
    except (ValueError, IndexError, TypeError):
        return None


def _cost_in(node: bytes) -> int | None:
    items = _der_items(node)
    for index, (tag, value) in enumerate(items):
        if tag == 0x06 and value == _SCRYPT_OID:
            params = [
                int.from_bytes(v, "big") for t, v in _der_items(items[index + 1][1]) if t == 0x02
            ]
            return params[0] * params[1] * params[2]
    ints = [int.from_bytes(v, "big") for t, v in items if t == 0x02]
    if ints and any(t == 0x04 for t, _ in items):  # (salt, iterations, ...)
        return ints[0]
    for tag, value in items:
        if tag == 0x30:
            found = _cost_in(value)
            if found is not None:
                return found
    return None


def load_private_key(pem: bytes, passphrase: bytes | None, secret_name: str) -> tuple[bytes, str]:
    """The key, loaded once per (key, passphrase): decrypting one costs its key derivation."""
    return _load_private_key(pem, passphrase, secret_name)


@functools.lru_cache(maxsize=256)
def _load_private_key(pem: bytes, passphrase: bytes | None, secret_name: str) -> tuple[bytes, str]:
    """A PEM private key (PKCS#8 or PKCS#1, plain or encrypted) -> (PKCS#8 DER, fingerprint).

    The connector wants DER bytes or a key object, not PEM. Raises ProbeFailure with a
    message that names the Secret's keys, never their values.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    where = f"Secret {secret_name!r}"
    text = pem.strip()
    if b"-----BEGIN" not in text or b"PRIVATE KEY-----" not in text:
        raise ProbeFailure(
            Reason.INVALID_CREDENTIALS,
            f"key 'private_key' of {where} is not a PEM private key "
            "(expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)",
        )
    # PKCS#8 and OpenSSL's PKCS#1 encryption both say so in the armour; a passphrase given
    # for a plain key is ignored rather than refused
    encrypted = b"BEGIN ENCRYPTED PRIVATE KEY" in text or b"Proc-Type: 4,ENCRYPTED" in text
    if b"BEGIN ENCRYPTED PRIVATE KEY" in text and passphrase is not None:
        cost = _pkcs8_kdf_cost(text)
        if cost is None or cost > MAX_KDF_COST:
            # decrypting runs the key derivation the key's owner chose: bound it before
            # one tenant's key can keep a worker busy for minutes
            raise ProbeFailure(
                Reason.INVALID_CREDENTIALS,
                f"key 'private_key' of {where} uses a key derivation that is unreadable or "
                f"too costly (more than {MAX_KDF_COST:,} iterations); re-encrypt it with "
                "openssl pkcs8 -topk8 -v2 aes256",
            )
    try:
        key = serialization.load_pem_private_key(text, password=passphrase if encrypted else None)
    except TypeError:
        # with the password chosen above, only an encrypted key without a passphrase is left
        raise ProbeFailure(
            Reason.INVALID_CREDENTIALS,
            f"key 'private_key' of {where} is encrypted, but the Secret has no "
            "'private_key_passphrase'",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if encrypted and passphrase is not None:
            message = (
                f"key 'private_key' of {where} could not be decrypted with "
                "'private_key_passphrase' (wrong passphrase, or a damaged key)"
            )
        else:
            message = (
                f"key 'private_key' of {where} is not a valid PEM private key (PKCS#8 or PKCS#1)"
            )
        raise ProbeFailure(Reason.INVALID_CREDENTIALS, message) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ProbeFailure(
            Reason.INVALID_CREDENTIALS,
            f"key 'private_key' of {where} is a {type(key).__name__.removeprefix('_')}; "
            "Snowflake key-pair authentication needs an RSA key",
        )
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return der, public_key_fingerprint(key)
