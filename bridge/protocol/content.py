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
from dataclasses import dataclass, field

from bridge.protocol import wire
from bridge.protocol.ids import is_message_id
from bridge.protocol.wire import WireError

__all__ = ["Content", "TextContent", "FileRef", "MAX_TEXT_BYTES", "PAD_FLOOR", "padded_size", "pad", "unpad", "KNOWN_TYPES",
           "DISPLAYABLE_KINDS", "fallback_text", "check_emoji", "check_file"]

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


# --- protocol 1.2: content types (PROTOCOL.md §6.7) ---------------------------------------------

REPLY, ATTACHMENT, REACTION, EDIT, DELETE, READ_RECEIPT, TYPING, CONSENT = (
    "reply", "attachment", "reaction", "edit", "delete", "read-receipt", "typing", "consent")
#: The types this bridge knows; any other decodes by its fallback text (§10).
KNOWN_TYPES = frozenset({TEXT, REPLY, ATTACHMENT, REACTION, EDIT, DELETE, READ_RECEIPT, TYPING, CONSENT})
#: Message kinds that are listed, counted as unread and shown (the others only change state).
DISPLAYABLE_KINDS = ("text", "reply", "attachment", "unknown")
#: Largest file an attachment may carry (plaintext bytes): 25 MiB.
MAX_FILE_SIZE = 26_214_400
MAX_FILES = 10
MAX_RECEIPT_IDS = 100
MAX_EMOJI_BYTES = 32
MAX_URL_CHARS = 512
MAX_NAME_BYTES = 255
MAX_MIME_CHARS = 127
CONSENT_STATES = ("allowed", "requested", "declined", "blocked")
_ID = re.compile(r"[0-9a-f]{32}")
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_BLOB_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(?::[0-9]{1,5})?/v1/blobs/[0-9a-f]{32}/[0-9a-f]{32}")


@dataclass(frozen=True)
class FileRef:
    """One file of an ``attachment`` content: where its ciphertext is, how to open and check it."""

    url: str
    key: bytes
    nonce: bytes
    digest: bytes  # SHA-256 of the ciphertext (incl. the GCM tag)
    sha256: bytes  # SHA-256 of the plaintext
    size: int  # plaintext bytes
    name: str
    mime: str

    def to_list(self) -> list[object]:
        return [self.url, self.key, self.nonce, self.digest, self.sha256, self.size, self.name, self.mime]

    @classmethod
    def from_list(cls, obj: object) -> "FileRef":
        if not isinstance(obj, list) or len(obj) != 8:
            raise WireError("a file must be an array of 8 items")
        url, key, nonce, digest, sha, size, name, mime = obj
        f = cls(url, key, nonce, digest, sha, size, name, mime)  # type: ignore[arg-type]
        check_file(f)
        return f


def check_file(f: FileRef) -> None:
    """Raises WireError unless ``f`` follows the file rules of §6.7."""
    if not isinstance(f.url, str) or len(f.url) > MAX_URL_CHARS or not _BLOB_URL.fullmatch(f.url):
        raise WireError("bad file url")
    for value, n, what in ((f.key, 32, "key"), (f.nonce, 12, "nonce"), (f.digest, 32, "digest"), (f.sha256, 32, "sha256")):
        if not isinstance(value, bytes) or len(value) != n:
            raise WireError(f"file {what} must be {n} bytes")
    if type(f.size) is not int or f.size < 0:
        raise WireError("bad file size")
    if f.size > MAX_FILE_SIZE:
        raise WireError(f"file larger than {MAX_FILE_SIZE} bytes")
    check_file_name(f.name)
    if not isinstance(f.mime, str) or len(f.mime) > MAX_MIME_CHARS or not _MIME.fullmatch(f.mime):
        raise WireError("bad file mime type")


def check_file_name(name: object) -> str:
    if not isinstance(name, str):
        raise WireError("bad file name")
    try:
        n = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise WireError("bad file name") from None
    if not 1 <= n <= MAX_NAME_BYTES or any(ch in "/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise WireError("bad file name")
    return name


def check_emoji(emoji: object) -> str:
    """Raises WireError unless ``emoji`` is 1..32 UTF-8 bytes without ASCII whitespace/control chars."""
    if not isinstance(emoji, str):
        raise WireError("emoji must be a text string")
    try:
        n = len(emoji.encode("utf-8"))
    except UnicodeEncodeError:
        raise WireError("bad emoji") from None
    if not 1 <= n <= MAX_EMOJI_BYTES or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in emoji):
        raise WireError("bad emoji")
    return emoji


def _id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise WireError(f"bad {what} id")
    return value


def _text_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _truncate(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def fallback_text(content_type: str, **f: object) -> str:
    """The text a 1.0/1.1 bridge shows for a content of this type (PROTOCOL.md §6.7)."""
    if content_type == REACTION:
        return f"Reacted {f['emoji']} to a message" if f.get("action") == "add" else ""
    if content_type == EDIT:
        return _truncate(f"Edited a message: {f['new_text']}")
    if content_type == DELETE:
        return "Deleted a message"
    if content_type == ATTACHMENT:
        lines = [f"[file: {x.name}, {x.size} bytes]" for x in f["files"]]  # type: ignore[attr-defined]
        caption = f.get("caption") or ""
        return _truncate("\n".join(([caption] if caption else []) + lines))
    if content_type in (READ_RECEIPT, TYPING, CONSENT):
        return ""
    return str(f.get("text") or "")


@dataclass(frozen=True)
class Content:
    """A message's content. ``content_type`` is ``"text"`` for 1.0 texts. A content of a type this
    bridge does not know (a later 1.x) decodes too: ``text`` is then its fallback text (PROTOCOL.md §10),
    possibly empty, and the type-specific fields after the common seven are ignored. The 1.2 types
    (§6.7) carry their own fields, checked on decode."""

    message_id: str
    sender: str
    recipient: str
    sent_at: int
    text: str
    content_type: str = TEXT
    #: Protocol 1.1: the sender installation's signed relay list (PROTOCOL.md §3.6), the 8th field of a
    #: "text" content, so a reply finds the sender's inbox relays without asking any relay.
    sender_relays: bytes | None = None
    reply_to: str | None = None  # reply, attachment
    target: str | None = None  # reaction, edit, delete
    action: str | None = None  # reaction: "add" | "remove"
    emoji: str | None = None  # reaction
    new_text: str | None = None  # edit
    ids: tuple[str, ...] = ()  # read-receipt
    typing: bool | None = None  # typing
    files: tuple[FileRef, ...] = field(default=())  # attachment
    caption: str | None = None  # attachment
    consent_peer: str | None = None  # consent
    consent_state: str | None = None
    consent_at: int | None = None

    @property
    def known(self) -> bool:
        return self.content_type in KNOWN_TYPES

    @property
    def kind(self) -> str:
        """The ``messages.kind`` of this content (store schema 3)."""
        if self.content_type in KNOWN_TYPES and self.content_type != TYPING:
            return self.content_type
        return "unknown"

    def extra(self) -> list[object]:
        """The type's own fields (positions 7, 8, …)."""
        t = self.content_type
        if t == TEXT:
            return [self.sender_relays] if self.sender_relays is not None else []
        if t == REPLY:
            return [self.reply_to]
        if t == ATTACHMENT:
            return [[f.to_list() for f in self.files], self.reply_to, self.caption or ""]
        if t == REACTION:
            return [self.target, self.action, self.emoji]
        if t == EDIT:
            return [self.target, self.new_text]
        if t == DELETE:
            return [self.target]
        if t == READ_RECEIPT:
            return [list(self.ids)]
        if t == TYPING:
            return [bool(self.typing)]
        if t == CONSENT:
            return [self.consent_peer, self.consent_state, self.consent_at]
        return []

    def encode(self) -> bytes:
        """The padded plaintext (:func:`pad` of the canonical CBOR array). Checks the type's fields."""
        fields: list[object] = [1, self.content_type, self.message_id, self.sender, self.recipient, self.sent_at, self.text, *self.extra()]
        data = wire.encode(fields)
        if self.content_type in KNOWN_TYPES and self.content_type != TEXT:
            _parse(wire.decode(data))  # never send what a receiver must refuse
        return pad(data)

    @classmethod
    def build(cls, content_type: str, message_id: str, sender: str, recipient: str, sent_at: int, extra: list[object],
              text: str | None = None) -> "Content":
        """A content of ``content_type`` from its extras (as :meth:`extra` gives them); ``text``
        defaults to the type's fallback. Raises WireError for extras a receiver would refuse."""
        obj: list[object] = [1, content_type, message_id, sender, recipient, sent_at, "", *extra]
        probe = _parse(obj)
        if text is None:
            text = fallback_text(content_type, text=probe.caption or "", emoji=probe.emoji, action=probe.action,
                                 new_text=probe.new_text, files=probe.files, caption=probe.caption)
        obj[6] = text
        return _parse(obj)

    @classmethod
    def decode(cls, data: bytes) -> "Content":
        """Decode a padded plaintext.

        Raises:
            WireError: malformed content or padding, or a known type's fields break its rules (§6.7).
        """
        return _parse(wire.decode(unpad(data)))


def _parse(obj: object) -> Content:
    if not isinstance(obj, list) or len(obj) < COMMON_FIELDS:
        raise WireError(f"content must be an array of at least {COMMON_FIELDS} items")
    wire.expect_array(obj[:COMMON_FIELDS], 1, COMMON_FIELDS)
    kind = obj[1]
    if not isinstance(kind, str) or len(kind) > 64 or not _CONTENT_TYPE.fullmatch(kind):
        raise WireError("bad content type")
    if not is_message_id(obj[2]):
        raise WireError("bad message id")
    text = wire.expect_str(obj[6], "text")
    if _text_bytes(text) > MAX_TEXT_BYTES:
        raise WireError("text too long")
    common = (obj[2], _address(obj[3], "sender"), _address(obj[4], "recipient"), wire.expect_int(obj[5], "sent_at"), text, kind)
    extra = obj[COMMON_FIELDS:]
    if kind == TEXT:
        relays = extra[0] if extra else None
        if not isinstance(relays, bytes) or len(relays) > MAX_RELAY_LIST_BYTES:
            relays = None  # an extra field of another shape is a later revision's: ignored (§10)
        return Content(*common, sender_relays=relays)
    if kind not in KNOWN_TYPES:
        return Content(*common)  # a later type: its fallback text, its fields ignored (§10)

    def arity(n: int) -> None:
        if len(extra) != n:
            raise WireError(f"a {kind} content has exactly {n} extra field(s)")

    if kind == REPLY:
        arity(1)
        return Content(*common, reply_to=_id(extra[0], "reply_to"))
    if kind == ATTACHMENT:
        arity(3)
        files, reply_to, caption = extra
        if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
            raise WireError(f"an attachment carries 1..{MAX_FILES} files")
        if reply_to is not None:
            _id(reply_to, "reply_to")
        if not isinstance(caption, str) or _text_bytes(caption) > MAX_TEXT_BYTES:
            raise WireError("bad caption")
        return Content(*common, files=tuple(FileRef.from_list(f) for f in files), reply_to=reply_to, caption=caption)  # type: ignore[arg-type]
    if kind == REACTION:
        arity(3)
        target, action, emoji = extra
        if action not in ("add", "remove"):
            raise WireError("reaction action must be add or remove")
        return Content(*common, target=_id(target, "target"), action=action, emoji=check_emoji(emoji))  # type: ignore[arg-type]
    if kind == EDIT:
        arity(2)
        target, new_text = extra
        if not isinstance(new_text, str) or not new_text or _text_bytes(new_text) > MAX_TEXT_BYTES:
            raise WireError("edit new_text must be a non-empty text of at most 64 KiB")
        return Content(*common, target=_id(target, "target"), new_text=new_text)
    if kind == DELETE:
        arity(1)
        return Content(*common, target=_id(extra[0], "target"))
    if kind == READ_RECEIPT:
        arity(1)
        ids = extra[0]
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_RECEIPT_IDS:
            raise WireError(f"a read receipt carries 1..{MAX_RECEIPT_IDS} ids")
        return Content(*common, ids=tuple(_id(i, "receipt") for i in ids))
    if kind == TYPING:
        arity(1)
        if not isinstance(extra[0], bool):
            raise WireError("typing must be a bool")
        return Content(*common, typing=extra[0])
    # CONSENT
    arity(3)
    peer, state, at = extra
    if state not in CONSENT_STATES:
        raise WireError("bad consent state")
    if type(at) is not int or at < 0:
        raise WireError("consent at must be an unsigned integer")
    return Content(*common, consent_peer=_address(peer, "consent peer"), consent_state=state, consent_at=at)  # type: ignore[arg-type]


#: The 1.0 name, kept: every content is a :class:`Content`.
TextContent = Content
