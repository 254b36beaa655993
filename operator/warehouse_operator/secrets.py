"""From a Kubernetes Secret's ``data`` to the values a provider needs (pure).

A provider asks for *logical* keys (``username``, ``password``, ``ca.crt`` ...).
``spec.credentialsSecretRef.keys`` may map a logical key to another data key, so that
existing Secrets (a database operator's app Secret, say) can be used unchanged.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any

from warehouse_operator.models import ProbeFailure, Reason


class SecretData:
    """The decoded data of one Secret, looked up by logical key names."""

    def __init__(
        self,
        secret_name: str,
        data: Mapping[str, Any] | None,
        key_map: Mapping[str, str] | None = None,
    ) -> None:
        self.secret_name = secret_name
        self._raw = dict(data or {})
        self._key_map = dict(key_map or {})
        self._used: list[bytes] = []

    @classmethod
    def from_plain(
        cls,
        secret_name: str,
        values: Mapping[str, str | bytes],
        key_map: Mapping[str, str] | None = None,
    ) -> SecretData:
        """Build from undecoded values (``stringData`` in a manifest, or tests)."""
        encoded = {
            k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode()
            for k, v in values.items()
        }
        return cls(secret_name, encoded, key_map)

    def _data_key(self, logical: str) -> str:
        return self._key_map.get(logical, logical)

    def _lookup(self, logical: str) -> bytes | None:
        key = self._data_key(logical)
        raw = self._raw.get(key)
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise ProbeFailure(
                Reason.INVALID_CREDENTIALS,
                f"key {key!r} of Secret {self.secret_name!r} is not a base64 string",
            )
        try:
            value = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ProbeFailure(
                Reason.INVALID_CREDENTIALS,
                f"key {key!r} of Secret {self.secret_name!r} is not valid base64",
            ) from None
        if value:
            self._used.append(value)
        return value or None

    def optional_bytes(self, *logical: str) -> bytes | None:
        """The first present, non-empty key among ``logical`` (aliases), or None."""
        for name in logical:
            value = self._lookup(name)
            if value is not None:
                return value
        return None

    def require_bytes(self, *logical: str) -> bytes:
        value = self.optional_bytes(*logical)
        if value is None:
            names = " or ".join(repr(self._data_key(n)) for n in logical)
            raise ProbeFailure(
                Reason.SECRET_KEY_MISSING,
                f"Secret {self.secret_name!r} has no non-empty key {names}",
            )
        return value

    def require_text(self, *logical: str) -> str:
        return self._decode(self.require_bytes(*logical), logical[0])

    def optional_text(self, *logical: str) -> str | None:
        value = self.optional_bytes(*logical)
        return None if value is None else self._decode(value, logical[0])

    def _decode(self, value: bytes, logical: str) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ProbeFailure(
                Reason.INVALID_CREDENTIALS,
                f"key {self._data_key(logical)!r} of Secret {self.secret_name!r} is not UTF-8 text",
            ) from None

    def sensitive_values(self) -> list[bytes]:
        """Every value read so far, for redaction of anything shown to users."""
        return list(self._used)

    def all_values(self) -> Iterable[bytes]:
        """Every decodable value in the Secret, used or not (redaction is cheap, leaks are not)."""
        for raw in self._raw.values():
            if isinstance(raw, str):
                try:
                    value = base64.b64decode(raw, validate=True)
                except (binascii.Error, ValueError):
                    continue
                if value:
                    yield value
