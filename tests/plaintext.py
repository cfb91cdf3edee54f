"""Searching stored bytes for a secret in the forms it could take there (the relay-holds-no-plaintext checks)."""

from __future__ import annotations

import base64


def forms(secret: bytes) -> dict[str, bytes]:
    """``secret`` as it could sit in a database: raw, hex (both cases), base64 (every alignment, both
    alphabets, inner part only), UTF-16 (both byte orders)."""
    out = {"raw": secret, "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode()}
    for shift in range(3):
        for name, enc in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            inner = enc(secret[shift:])[4:-4]  # away from the edges, where the alignment changes the characters
            out[f"{name}+{shift}"] = inner
    try:
        text = secret.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        out["utf16le"] = text.encode("utf-16-le")
        out["utf16be"] = text.encode("utf-16-be")
    return out
