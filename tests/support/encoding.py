"""Encodings the tests build Kubernetes objects with."""

from __future__ import annotations

import base64

__all__ = ["b64"]


def b64(text: str | bytes) -> str:
    """Base64 of ``text`` (UTF-8 when a ``str``), as a Secret's ``data`` holds it."""
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()
