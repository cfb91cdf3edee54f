"""Message content: the plaintext inside a ratchet message (PROTOCOL.md §6.1).

``[1, "text", message_id, sender, recipient, sent_at_ms, text]`` in canonical CBOR. ``sender`` and
``recipient`` are checksummed addresses; the receiving bridge checks ``sender`` against the verified
sealed-sender statement, so a sender cannot speak for another wallet.

The CBOR is padded before encryption (:func:`pad`), so an envelope's size tells the relay only the
size bucket of the text, not its length: ``content ‖ 0x80 ‖ 0x00…`` up to the next power of two of
at least :data:`PAD_FLOOR` bytes (ISO/IEC 7816-4 padding, as Signal pads its plaintexts).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.protocol import wire
from bridge.protocol.ids import is_message_id
from bridge.protocol.wire import WireError

__all__ = ["TextContent", "MAX_TEXT_BYTES", "PAD_FLOOR", "padded_size", "pad", "unpad"]

#: Largest message text, in UTF-8 bytes (an envelope stays far below the relay's 1 MiB).
MAX_TEXT_BYTES = 64 * 1024
#: Smallest padded plaintext: a content of up to 511 bytes (a text of up to ~370 bytes) looks the same.
PAD_FLOOR = 512


def padded_size(n: int) -> int:
    """The size bucket of an ``n``-byte content: the smallest power of two >= max(n + 1, PAD_FLOOR)."""
    size = PAD_FLOOR
    while size < n + 1:
        size *= 2
    return size


def pad(content: bytes) -> bytes:
    """``content ‖ 0x80 ‖ 0x00*`` to :func:`padded_size` bytes (PROTOCOL.md §6.1)."""
    return content + b"\x80" + bytes(padded_size(len(content)) - len(content) - 1)


def unpad(data: bytes) -> bytes:
    """Strip the padding of :func:`pad`.

    Raises:
        WireError: the length is not a size bucket, or the padding is not ``0x80 0x00*``.
    """
    if len(data) < PAD_FLOOR or len(data) & (len(data) - 1):
        raise WireError("padded content must be a power of two of at least 512 bytes")
    end = len(data.rstrip(b"\x00")) - 1
    if end < 0 or data[end] != 0x80 or padded_size(end) != len(data):
        raise WireError("bad content padding")
    return data[:end]


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
        """The padded plaintext (:func:`pad` of the canonical CBOR array)."""
        return pad(wire.encode([1, "text", self.message_id, self.sender, self.recipient, self.sent_at, self.text]))

    @classmethod
    def decode(cls, data: bytes) -> "TextContent":
        """Decode a padded plaintext.

        Raises:
            WireError: malformed content or padding.
        """
        obj = wire.expect_array(wire.decode(unpad(data)), 1, 7)
        if obj[1] != "text":
            raise WireError("unknown content type")
        if not is_message_id(obj[2]):
            raise WireError("bad message id")
        text = wire.expect_str(obj[6], "text")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise WireError("text too long")
        return cls(obj[2], _address(obj[3], "sender"), _address(obj[4], "recipient"), wire.expect_int(obj[5], "sent_at"), text)
