"""Message content: the plaintext inside a ratchet message (PROTOCOL.md §6.1).

``[1, "text", message_id, sender, recipient, sent_at_ms, text]`` in canonical CBOR; later content
types share those seven fields (the last being a fallback text) and append their own (§10). ``sender`` and
``recipient`` are checksummed addresses; the receiving bridge checks ``sender`` against the verified
sealed-sender statement, so a sender cannot speak for another wallet.

The CBOR is padded before encryption (:func:`pad`), so an envelope's size tells the relay only the
size bucket of the text, not its length: ``content ‖ 0x80 ‖ 0x00…`` up to the next power of two of
at least :data:`PAD_FLOOR` bytes (ISO/IEC 7816-4 padding, as Signal pads its plaintexts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.protocol import wire
from bridge.protocol.ids import is_message_id
from bridge.protocol.wire import WireError

__all__ = ["TextContent", "MAX_TEXT_BYTES", "PAD_FLOOR", "padded_size", "pad", "unpad"]

#: A content type: lowercase ASCII words joined by "." or "-" (e.g. "text", "reply", "reaction").
_CONTENT_TYPE = re.compile(r"[a-z][a-z0-9]*(?:[.-][a-z0-9]+)*")
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
    return value  # its EIP-55 form is checked by the receiver's bindings (PROTOCOL.md §6.3)


#: A relay-list record carried in a text content is at most this long (PROTOCOL.md §3.6).
MAX_RELAY_LIST_BYTES = 4096

#: The content type every 1.0 bridge shows; others are shown by their fallback text (§10).
TEXT = "text"
#: Fields every content has, whatever its type: [1, type, message_id, sender, recipient, sent_at, text].
COMMON_FIELDS = 7


@dataclass(frozen=True)
class TextContent:
    """A message's content. ``content_type`` is ``"text"`` for 1.0 texts. A content of a type this
    bridge does not know (a later 1.x) decodes too: ``text`` is then its fallback text (PROTOCOL.md §10),
    possibly empty, and the type-specific fields after the common seven are ignored."""

    message_id: str
    sender: str
    recipient: str
    sent_at: int
    text: str
    content_type: str = TEXT
    #: Protocol 1.1: the sender installation's signed relay list (PROTOCOL.md §3.6), the 8th field of a
    #: "text" content, so a reply finds the sender's inbox relays without asking any relay.
    sender_relays: bytes | None = None

    @property
    def known(self) -> bool:
        return self.content_type == TEXT

    def encode(self) -> bytes:
        """The padded plaintext (:func:`pad` of the canonical CBOR array)."""
        fields: list[object] = [1, self.content_type, self.message_id, self.sender, self.recipient, self.sent_at, self.text]
        if self.sender_relays is not None:
            fields.append(self.sender_relays)
        return pad(wire.encode(fields))

    @classmethod
    def decode(cls, data: bytes) -> "TextContent":
        """Decode a padded plaintext.

        Raises:
            WireError: malformed content or padding.
        """
        obj = wire.decode(unpad(data))
        if not isinstance(obj, list) or len(obj) < COMMON_FIELDS:
            raise WireError(f"content must be an array of at least {COMMON_FIELDS} items")
        wire.expect_array(obj[:COMMON_FIELDS], 1, COMMON_FIELDS)
        kind = obj[1]
        if not isinstance(kind, str) or len(kind) > 64 or not _CONTENT_TYPE.fullmatch(kind):
            raise WireError("bad content type")
        if not is_message_id(obj[2]):
            raise WireError("bad message id")
        text = wire.expect_str(obj[6], "text")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise WireError("text too long")
        relays = obj[COMMON_FIELDS] if kind == TEXT and len(obj) > COMMON_FIELDS else None
        if not isinstance(relays, bytes) or len(relays) > MAX_RELAY_LIST_BYTES:
            relays = None  # an extra field of another shape is a later revision's: ignored (§10)
        return cls(
            obj[2], _address(obj[3], "sender"), _address(obj[4], "recipient"), wire.expect_int(obj[5], "sent_at"), text, kind, relays
        )
