"""Encodings tests need to build Kubernetes objects."""

from __future__ import annotations

import base64


def b64(text: str | bytes) -> str:
    """Base64 of ``text`` (UTF-8 when a str), as Secret ``data`` holds values."""
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()
