"""Message content: the plaintext inside a ratchet message (PROTOCOL.md §6).

``[1, "text", message_id, sender, recipient, sent_at_ms, text]`` in canonical CBOR. ``sender`` and
``recipient`` are checksummed addresses; the receiving bridge checks ``sender`` against the verified
sealed-sender statement, so a sender cannot speak for another wallet.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.protocol import wire
from bridge.protocol.ids import is_message_id
from bridge.protocol.wire import WireError

__all__ = ["TextContent", "MAX_TEXT_BYTES"]

#: Largest message text, in UTF-8 bytes (an envelope stays far below the relay's 1 MiB).
MAX_TEXT_BYTES = 64 * 1024


def _address(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) != 42 or not value.startswith("0x"):
        raise WireError(f"{name} must be a 0x address")
    return value


@dataclass(frozen=True)
class TextContent:
    message_id: str
    sender: str
    recipient: str
    sent_at: int
    text: str

    def encode(self) -> bytes:
        return wire.encode([1, "text", self.message_id, self.sender, self.recipient, self.sent_at, self.text])

    @classmethod
    def decode(cls, data: bytes) -> "TextContent":
        """Raises:
        WireError: malformed content.
        """
        obj = wire.expect_array(wire.decode(data), 1, 7)
        if obj[1] != "text":
            raise WireError("unknown content type")
        if not is_message_id(obj[2]):
            raise WireError("bad message id")
        text = wire.expect_str(obj[6], "text")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise WireError("text too long")
        return cls(obj[2], _address(obj[3], "sender"), _address(obj[4], "recipient"), wire.expect_int(obj[5], "sent_at"), text)
