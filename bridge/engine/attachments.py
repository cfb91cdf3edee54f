"""Attachments (issue 12; PROTOCOL.md §6.9, §7 "Blobs").

Sending: a file is first an *upload* (``<home>/uploads/<id>``, 0600; :func:`upload_begin` /
:func:`upload_chunk` from the browser, :func:`upload_file` from the CLI). When a message is sent with
uploads, :func:`prepare_uploads` encrypts each one, streamed, with AES-256-GCM under a fresh key and
nonce into a temporary file while hashing the plaintext (``sha256``) and the ciphertext ‖ tag
(``digest``), then PUTs the ciphertext, streamed, to the first inbox relay of the recipient's first
installation (sorted ids). The message carries a :class:`FileRef` per file: locator, key, nonce,
digests, size, name, MIME type. The relay sees only ciphertext and random ids.

Receiving: each file is a row of ``attachments`` in state ``pending``; :func:`fetch` (the daemon's
downloader, or a read/save asking for it) downloads it only from a relay this bridge already knows
(its own home/reading relays, relays in the verified relay lists of the sender or of our own wallet,
the relays their identity logs were found on): a peer's locator naming any other host is ``refused``,
never requested (no request into our network on a peer's say-so). It reads at most size + 16 bytes,
checks the digest, the GCM tag and the plaintext SHA-256 (any mismatch: ``failed``, "digest mismatch",
nothing kept), and writes ``<home>/attachments/<id>`` (0600), with a thumbnail for images (Pillow,
decompression-bomb guard kept).
"""

from __future__ import annotations

import hashlib
import io
import logging
import mimetypes
import os
import re
import secrets as _secrets
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bridge.engine import contents
from bridge.protocol.content import FileRef
from bridge.engine.engine import BadInput, EngineError
from bridge.relay.client import NotFound, RelayError, RelayUnavailable
from bridge.store import now_ms

log = logging.getLogger("parley.attachments")

__all__ = [
    "FileRef",
    "AttachmentError",
    "MAX_FILE_BYTES",
    "CHUNK_SIZE",
    "upload_begin",
    "upload_chunk",
    "upload_cancel",
    "upload_file",
    "prepare_uploads",
    "record_outgoing",
    "record_incoming",
    "fetch",
    "attachment_path",
    "attachment_read",
    "thumbnail_data_url",
    "pending_ids",
    "Downloader",
]

#: Largest file (plaintext bytes): 25 MiB (PROTOCOL.md §6.7).
MAX_FILE_BYTES = 26_214_400
#: Largest upload chunk and read window of the JSON-RPC methods (attachments.chunk / attachments.read).
CHUNK_SIZE = 196_608
TAG = 16
_IO = 64 * 1024
THUMB_PX = 320
_THUMB_MIMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")
_ID = re.compile(r"[0-9a-f]{32}")
_LOCATOR = re.compile(r"(https?://[^/?#@\s]+)/v1/blobs/([0-9a-f]{32})/([0-9a-f]{32})")
DIGEST_MISMATCH = "digest mismatch"
#: an upload never sent is deleted after this long (ms)
UPLOAD_KEEP_MS = 7 * 86_400_000

class AttachmentError(EngineError):
    """An upload or download failed; ``reason`` is one of quota, too_large, relay, digest, unavailable
    (JSON-RPC -32012 ``data.reason``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---- places ------------------------------------------------------------------------------------


def home_of(engine: Any) -> Path:
    """The bridge's home directory (the store's file lives in it)."""
    return Path(engine.store.path).resolve().parent


def _private_dir(engine: Any, name: str) -> Path:
    d = home_of(engine) / name
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def _open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_EXCL) -> int:
    return os.open(path, flags, 0o600)


# ---- checks --------------------------------------------------------------------------------------


def check_name(name: Any) -> str:
    """A file name as the wire allows it: 1..255 UTF-8 bytes, no / \\ NUL or control characters."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise BadInput("a file name is required")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("the file name is not valid Unicode") from None
    if len(raw) > 255:
        raise BadInput("the file name exceeds 255 bytes")
    if any(ch in "/\\" or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in name):
        raise BadInput("the file name contains a slash, a backslash or a control character")
    return name


def check_mime(mime: Any) -> str:
    if not isinstance(mime, str) or len(mime) > 127 or not _MIME.fullmatch(mime):
        raise BadInput("the MIME type must be type/subtype (lowercase, at most 127 characters)")
    return mime


def check_size(size: Any) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadInput("the size must be a non-negative integer")
    if size > MAX_FILE_BYTES:
        raise BadInput(f"a file is at most {MAX_FILE_BYTES} bytes (25 MiB)")
    return size


def _upload_row(engine: Any, upload_id: Any) -> Any:
    if not isinstance(upload_id, str) or not _ID.fullmatch(upload_id):
        raise BadInput("unknown upload id")
    rows = engine.store.read("SELECT * FROM uploads WHERE id = ?", (upload_id,))
    if not rows:
        raise BadInput("unknown upload id")
    return rows[0]


# ---- uploads -------------------------------------------------------------------------------------


def upload_begin(engine: Any, name: str, size: int, mime: str) -> str:
    """Start an upload of ``size`` bytes; returns its id. The file is ``<home>/uploads/<id>`` (0600)."""
    name, size, mime = check_name(name), check_size(size), check_mime(mime)
    uid = _secrets.token_hex(16)
    path = _private_dir(engine, "uploads") / uid
    os.close(_open_private(path))
    with engine.store.write() as c:
        c.execute(
            "INSERT INTO uploads(id, name, size, mime, received, path, created_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
            (uid, name, size, mime, str(path), now_ms()),
        )
    return uid


def upload_chunk(engine: Any, upload_id: str, offset: int, data: bytes) -> int:
    """Append ``data`` at ``offset`` (which must be the bytes received so far); returns the new count."""
    row = _upload_row(engine, upload_id)
    if not isinstance(data, (bytes, bytearray)) or len(data) > CHUNK_SIZE:
        raise BadInput(f"a chunk is at most {CHUNK_SIZE} bytes")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset != row["received"]:
        raise BadInput(f"the next chunk starts at offset {row['received']}")
    if offset + len(data) > row["size"]:
        raise BadInput("the chunk goes past the upload's declared size")
    fd = os.open(row["path"], os.O_WRONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        view = memoryview(bytes(data))
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    received = offset + len(data)
    with engine.store.write() as c:
        c.execute("UPDATE uploads SET received = ? WHERE id = ?", (received, upload_id))
    return received


def upload_cancel(engine: Any, upload_id: str) -> None:
    row = _upload_row(engine, upload_id)
    with engine.store.write() as c:
        c.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
    Path(row["path"]).unlink(missing_ok=True)


def upload_file(engine: Any, path: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> str:
    """Copy a local file into an upload (streamed; ``progress(done, total)``); returns the upload id."""
    src = Path(path)
    try:
        size = src.stat().st_size
    except OSError as exc:
        raise BadInput(f"cannot read {src}: {exc.strerror or exc}") from None
    if not src.is_file():
        raise BadInput(f"{src} is not a file")
    check_size(size)
    mime = mimetypes.guess_type(src.name)[0] or "application/octet-stream"
    try:
        mime = check_mime(mime.lower())
    except BadInput:
        mime = "application/octet-stream"
    uid = upload_begin(engine, src.name, size, mime)
    dst = _upload_row(engine, uid)["path"]
    done = 0
    try:
        with src.open("rb") as fin, open(dst, "wb") as fout:
            while piece := fin.read(_IO):
                if done + len(piece) > size:
                    raise BadInput(f"{src} grew while it was read")
                fout.write(piece)
                done += len(piece)
                if progress is not None:
                    progress(done, size)
        if done != size:
            raise BadInput(f"{src} shrank while it was read")
    except BaseException:
        upload_cancel(engine, uid)
        raise
    with engine.store.write() as c:
        c.execute("UPDATE uploads SET received = ? WHERE id = ?", (done, uid))
    return uid


# ---- sending ---------------------------------------------------------------------------------


class _ProgressReader:
    """A streamed body for requests (it has a length, so requests sends Content-Length, never a
    chunked body) that reports how much was read."""

    def __init__(self, f: Any, total: int, report: Callable[[int, int], None]) -> None:
        self._f = f
        self._total = total
        self._done = 0
        self._report = report
        self._last = -1

    def __iter__(self) -> Any:
        while piece := self.read(_IO):
            yield piece

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(_IO if n is None or n < 0 else min(n, _IO))
        self._done += len(data)
        step = max(1, self._total // 50)
        if self._done // step != self._last or self._done == self._total:
            self._last = self._done // step
            self._report(self._done, self._total)
        return bytes(data)

    def __len__(self) -> int:
        return self._total


def _encrypt_to(src: str, dst: Path, key: bytes, nonce: bytes) -> tuple[bytes, bytes, int]:
    """Encrypt ``src`` into ``dst`` (ciphertext ‖ tag), streamed. Returns (sha256 plaintext, digest, size)."""
    enc = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    h_plain, h_ct = hashlib.sha256(), hashlib.sha256()
    size = 0
    fd = _open_private(dst)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        while piece := fin.read(_IO):
            size += len(piece)
            h_plain.update(piece)
            ct = enc.update(piece)
            h_ct.update(ct)
            fout.write(ct)
        tail = enc.finalize() + enc.tag
        h_ct.update(tail)
        fout.write(tail)
    return h_plain.digest(), h_ct.digest(), size


def blob_relay(engine: Any, peer: str) -> tuple[str, str]:
    """``(relay URL, installation id)``: the first inbox relay of the recipient's first installation."""
    insts = engine.installations_of(peer)
    if not insts:
        raise BadInput(f"{peer} has no active installation")
    iid = sorted(insts)[0]
    relays = engine.inbox_relays(iid)
    if not relays:
        raise AttachmentError("no relay is known for the recipient", "unavailable")
    return relays[0].rstrip("/"), iid


def prepare_uploads(engine: Any, peer: str, upload_ids: Iterable[str]) -> list[FileRef]:
    """Encrypt and upload each upload (in order) to the recipient's relay; returns their FileRefs.

    The uploads stay (their rows and files) until :func:`record_outgoing` takes them: a failure here
    loses nothing, and the message can be sent again.

    Raises:
        BadInput: an unknown or incomplete upload, more than 10 files.
        AttachmentError: the relay refused or could not be reached (``reason``).
    """
    ids = list(upload_ids)
    if not 1 <= len(ids) <= 10:
        raise BadInput("a message carries 1 to 10 files")
    if len(set(ids)) != len(ids):
        raise BadInput("the same upload is named twice")
    rows = [_upload_row(engine, u) for u in ids]
    for r in rows:
        if r["received"] != r["size"]:
            raise BadInput(f"the upload of {r['name']} is incomplete ({r['received']} of {r['size']} bytes)")
    relay, iid = blob_relay(engine, peer)
    if len(f"{relay}/v1/blobs/{iid}/{'0' * 32}") > 512 or not _LOCATOR.fullmatch(f"{relay}/v1/blobs/{iid}/{'0' * 32}"):
        raise AttachmentError(f"the recipient's relay URL {relay[:80]} cannot carry a file locator", "relay")
    client = engine.client(relay)
    tmpdir = _private_dir(engine, "uploads")
    refs: list[FileRef] = []
    for r in rows:
        key, nonce = os.urandom(32), os.urandom(12)
        blob_id = _secrets.token_hex(16)
        tmp = tmpdir / f".{blob_id}.enc"
        try:
            sha, digest, size = _encrypt_to(r["path"], tmp, key, nonce)
            if size != r["size"]:
                raise BadInput(f"the upload of {r['name']} changed size")

            def report(done: int, total: int, uid: str = r["id"]) -> None:
                engine._emit("attachment.progress", {"id": uid, "peer": peer, "phase": "upload", "done": done, "total": total})

            with tmp.open("rb") as f:
                try:
                    client.put_blob(iid, blob_id, _ProgressReader(f, size + TAG, report), size + TAG)
                except RelayError as exc:
                    if exc.status == 429 and exc.code == "blob_quota":
                        raise AttachmentError(
                            f"the recipient's relay {relay} has no room for {r['name']} (its attachment quota is full); "
                            "the file is kept, try again later", "quota",
                        ) from None
                    if exc.status == 413:
                        raise AttachmentError(f"the relay {relay} refuses a file of this size ({exc.message})", "too_large") from None
                    raise AttachmentError(f"the relay {relay} refused {r['name']}: {exc.code} ({exc.message})", "relay") from None
                except RelayUnavailable as exc:
                    raise AttachmentError(f"cannot upload {r['name']}: {exc}", "unavailable") from None
        finally:
            tmp.unlink(missing_ok=True)
        refs.append(FileRef(f"{relay}/v1/blobs/{iid}/{blob_id}", key, nonce, digest, sha, size, r["name"], r["mime"]))
    return refs


def _attachment_dir(engine: Any) -> Path:
    return _private_dir(engine, "attachments")


def record_outgoing(c: Any, engine: Any, message_id: str, refs: list[FileRef], upload_ids: Iterable[str]) -> None:
    """In the send's transaction: one ``local`` attachments row per file (the upload's file moves to
    ``<home>/attachments/<id>``; an image gets its thumbnail) and the uploads are forgotten."""
    for idx, (ref, uid) in enumerate(zip(refs, list(upload_ids))):
        row = c.execute("SELECT path FROM uploads WHERE id = ?", (uid,)).fetchone()
        aid = f"{message_id}-{idx}"
        path = _attachment_dir(engine) / aid
        if row is not None and Path(row["path"]).exists():
            os.replace(row["path"], path)
        thumb = make_thumbnail(path, ref.mime) if path.exists() else None
        c.execute(
            "INSERT OR REPLACE INTO attachments(id, message_id, idx, name, size, mime, sha256, url, key, nonce, digest, state, path, "
            "thumb, error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'local', ?, ?, NULL, ?)",
            (aid, message_id, idx, ref.name, ref.size, ref.mime, ref.sha256.hex(), ref.url,
             contents.seal_key(engine, aid, ref.key), ref.nonce, ref.digest,
             str(path) if path.exists() else None, thumb, now_ms()),
        )
        c.execute("DELETE FROM uploads WHERE id = ?", (uid,))


def record_incoming(c: Any, engine: Any, message_id: str, refs: Iterable[FileRef]) -> None:
    """One ``pending`` attachments row per received file, key sealed (what ``_open`` writes for an
    ``attachment`` content: :func:`bridge.engine.contents.store_attachments`)."""
    contents.store_attachments(c, engine, message_id, tuple(refs), "pending", now_ms())


# ---- receiving ---------------------------------------------------------------------------------


def allowed_relays(engine: Any, sender: str) -> set[str]:
    """Relays a download may go to: ours (home, reading), those in the verified relay lists of the
    sender and of our own wallet, and those their identity logs were found on."""
    out = {u.rstrip("/") for u in (*engine.home_relays, *engine.reading_relays)}
    addresses = (sender, engine.address)
    for a in addresses:
        for r in engine.store.read("SELECT relays FROM peer_relay_lists WHERE address = ?", (a,)):
            try:
                import json

                out.update(u.rstrip("/") for u in json.loads(r["relays"]) if isinstance(u, str))
            except ValueError:
                continue
        for r in engine.store.read("SELECT relay FROM peer_sources WHERE address = ?", (a,)):
            if isinstance(r["relay"], str):
                out.add(r["relay"].rstrip("/"))
    return out


def _row(engine: Any, attachment_id: Any) -> Any:
    if not isinstance(attachment_id, str) or len(attachment_id) > 40:
        raise BadInput("unknown attachment id")
    rows = engine.store.read(
        "SELECT a.*, m.sender AS m_sender, m.peer AS m_peer FROM attachments a JOIN messages m ON m.id = a.message_id WHERE a.id = ?",
        (attachment_id,),
    )
    if not rows:
        raise BadInput("unknown attachment id")
    return rows[0]


def _set(engine: Any, aid: str, state: str, *, error: str | None = None, path: str | None = None, thumb: bytes | None = None) -> None:
    with engine.store.write() as c:
        c.execute(
            "UPDATE attachments SET state = ?, error = ?, path = COALESCE(?, path), thumb = COALESCE(?, thumb), updated_at = ? WHERE id = ?",
            (state, error, path, thumb, now_ms(), aid),
        )


def _updated(engine: Any, message_id: str) -> None:
    getter = getattr(engine, "message", None)
    msg = getter(message_id) if callable(getter) else None
    engine._emit("message.updated", msg if msg is not None else {"id": message_id})


_fetch_locks: dict[str, threading.Lock] = {}
_fetch_locks_guard = threading.Lock()


def fetch(engine: Any, attachment_id: str) -> dict[str, Any]:
    """Download, verify and decrypt one attachment (no-op when it is there already). Returns
    ``{id, state, error, path}``; a refusal or a failure is a state, not an exception."""
    with _fetch_locks_guard:
        lock = _fetch_locks.setdefault(attachment_id, threading.Lock())
    with lock:
        row = _row(engine, attachment_id)
        if row["state"] in ("done", "local") and row["path"] and Path(row["path"]).exists():
            return {"id": row["id"], "state": row["state"], "error": None, "path": row["path"]}
        if row["state"] == "refused":
            return {"id": row["id"], "state": "refused", "error": row["error"], "path": None}
        state, error, path = _download(engine, row)
        _updated(engine, row["message_id"])
        return {"id": row["id"], "state": state, "error": error, "path": path}


def _download(engine: Any, row: Any) -> tuple[str, str | None, str | None]:
    aid = row["id"]
    m = _LOCATOR.fullmatch(row["url"] or "")
    if m is None:
        _set(engine, aid, "refused", error="the file's locator is not a relay blob URL")
        return "refused", "the file's locator is not a relay blob URL", None
    base, iid, blob_id = m.group(1), m.group(2), m.group(3)
    if base not in allowed_relays(engine, row["m_sender"]):
        err = f"the file is on {base}, a relay this bridge does not know: not downloaded"
        _set(engine, aid, "refused", error=err)
        return "refused", err, None
    size = int(row["size"])
    try:
        key = contents.unseal_key(engine, aid, row["key"])
    except Exception:
        _set(engine, aid, "failed", error="the file's key cannot be unsealed")
        return "failed", "the file's key cannot be unsealed", None
    _set(engine, aid, "downloading")
    final = _attachment_dir(engine) / aid
    part = final.with_name(f".{aid}.part")
    part.unlink(missing_ok=True)
    dec = Cipher(algorithms.AES(key), modes.GCM(bytes(row["nonce"]))).decryptor()
    h_ct, h_plain = hashlib.sha256(), hashlib.sha256()
    want = size + TAG
    got = 0
    tail = b""
    ok = False
    try:
        try:
            resp = engine.client(base).get_blob(iid, blob_id)
        except NotFound:
            _set(engine, aid, "failed", error="the file is no longer on the relay (expired or never stored)")
            return "failed", "the file is no longer on the relay (expired or never stored)", None
        except RelayError as exc:
            _set(engine, aid, "failed", error=f"the relay refused the download: {exc.code}")
            return "failed", f"the relay refused the download: {exc.code}", None
        except RelayUnavailable as exc:
            _set(engine, aid, "pending", error=str(exc))  # tried again later
            return "pending", str(exc), None
        step = max(1, want // 50)
        last = -1
        try:
            with resp, os.fdopen(_open_private(part), "wb") as out:
                for piece in resp.iter_content(_IO):
                    got += len(piece)
                    if got > want:  # hard stop: never more than the file's size + the tag
                        raise _Mismatch()
                    h_ct.update(piece)
                    data = tail + piece
                    body, tail = data[:-TAG] if len(data) > TAG else b"", data[-TAG:]
                    if body:
                        plain = dec.update(body)
                        h_plain.update(plain)
                        out.write(plain)
                    if got // step != last:
                        last = got // step
                        engine._emit("attachment.progress", {"id": aid, "peer": row["m_peer"], "phase": "download", "done": got, "total": want})
                if got != want or not _secrets.compare_digest(h_ct.digest(), bytes(row["digest"])):
                    raise _Mismatch()
                try:
                    out.write(dec.finalize_with_tag(tail))
                except InvalidTag:
                    raise _Mismatch() from None
                if h_plain.hexdigest() != row["sha256"]:
                    raise _Mismatch()
        except _Mismatch:
            _set(engine, aid, "failed", error=DIGEST_MISMATCH)
            return "failed", DIGEST_MISMATCH, None
        except OSError as exc:
            _set(engine, aid, "pending", error=f"download interrupted: {exc}")
            return "pending", f"download interrupted: {exc}", None
        except Exception as exc:  # requests' streaming errors (connection reset mid-body)
            _set(engine, aid, "pending", error=f"download interrupted: {type(exc).__name__}")
            return "pending", f"download interrupted: {type(exc).__name__}", None
        os.replace(part, final)
        ok = True
    finally:
        if not ok:
            part.unlink(missing_ok=True)
    thumb = make_thumbnail(final, row["mime"])
    _set(engine, aid, "done", path=str(final), thumb=thumb)
    return "done", None, str(final)


class _Mismatch(Exception):
    pass


def make_thumbnail(path: Path, mime: str) -> bytes | None:
    """A ≤ 320 px JPEG (PNG when the image has transparency) of an image file; None when it is not
    one of PNG/JPEG/GIF/WebP or cannot be read. Pillow's decompression-bomb limit stays in force
    (its warning is an error here), so a tiny file claiming a gigapixel image makes no thumbnail."""
    fmt = _THUMB_MIMES.get(mime)
    if fmt is None:
        return None
    import warnings

    try:
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=[fmt]) as img:
                if img.width * img.height > (Image.MAX_IMAGE_PIXELS or 89_478_485):
                    return None
                img.thumbnail((THUMB_PX, THUMB_PX))
                alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
                out = io.BytesIO()
                if alpha:
                    img.convert("RGBA").save(out, "PNG", optimize=True)
                else:
                    img.convert("RGB").save(out, "JPEG", quality=80)
                return out.getvalue()
    except Exception:  # noqa: BLE001 - a hostile image never breaks anything: no thumbnail
        return None


def thumbnail_data_url(engine: Any, attachment_id: str) -> str | None:
    row = _row(engine, attachment_id)
    thumb = row["thumb"]
    if not thumb:
        return None
    import base64

    kind = "image/png" if bytes(thumb[:8]) == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{kind};base64," + base64.b64encode(bytes(thumb)).decode()


def attachment_path(engine: Any, attachment_id: str) -> str:
    """The plaintext file of an attachment, downloaded first if needed.

    Raises:
        BadInput: unknown id. AttachmentError: not available (``reason``: digest, relay, unavailable).
    """
    res = fetch(engine, attachment_id)
    if res["state"] in ("done", "local") and res["path"]:
        return str(res["path"])
    if res["state"] == "failed" and res["error"] == DIGEST_MISMATCH:
        raise AttachmentError("the downloaded file does not match its digest: " + DIGEST_MISMATCH, "digest")
    if res["state"] == "refused":
        raise AttachmentError(str(res["error"]), "relay")
    raise AttachmentError(f"the file is not available: {res['error'] or res['state']}", "unavailable")


def attachment_read(engine: Any, attachment_id: str, offset: int, length: int) -> tuple[bytes, bool, int]:
    """``(data, eof, size)``: up to ``length`` (≤ CHUNK_SIZE) bytes of the plaintext from ``offset``."""
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise BadInput("offset must be a non-negative integer")
    if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= CHUNK_SIZE:
        raise BadInput(f"length must be 0 to {CHUNK_SIZE}")
    path = attachment_path(engine, attachment_id)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(min(offset, size))
        data = f.read(length)
    return data, offset + len(data) >= size, size


# ---- the daemon's downloader -------------------------------------------------------------------


def pending_ids(engine: Any, limit: int = 20) -> list[str]:
    """Pending attachments of conversations whose consent is ``allowed`` (never for blocked peers;
    requests only once accepted), oldest first."""
    try:
        from bridge.engine import consent
    except ImportError:  # pragma: no cover - until the consent module lands
        consent = None  # type: ignore[assignment]
    rows = engine.store.read(
        "SELECT a.id, m.peer FROM attachments a JOIN messages m ON m.id = a.message_id WHERE a.state = 'pending' "
        "ORDER BY a.updated_at LIMIT ?",
        (int(limit) * 5,),
    )
    out: list[str] = []
    for r in rows:
        state = "allowed" if consent is None else consent.state(engine.store, r["peer"])
        if state == "allowed":
            out.append(r["id"])
        if len(out) >= limit:
            break
    return out


class Downloader:
    """Fetches pending attachments in the background (a daemon thread, like the outbox loop); woken by
    :meth:`wake` (a message arrived, a conversation was accepted) and every ``interval`` seconds."""

    def __init__(self, engine: Any, stop: threading.Event, *, interval: float = 30.0) -> None:
        self.engine = engine
        self.stop = stop
        self.interval = interval
        self.event = threading.Event()
        self._retry_at: dict[str, float] = {}

    def wake(self, *_: Any) -> None:
        self.event.set()

    def on_event(self, event: str, payload: dict[str, Any]) -> None:
        if event in ("message.new", "consent.changed"):
            self.event.set()

    def run_once(self) -> int:
        import time

        n = 0
        now = time.monotonic()
        for aid in pending_ids(self.engine):
            if self.stop.is_set():
                break
            if self._retry_at.get(aid, 0) > now:
                continue
            try:
                res = fetch(self.engine, aid)
            except Exception:
                log.exception("download of attachment %s failed", aid)
                continue
            if res["state"] == "pending":  # relay unreachable: later, with a growing pause
                self._retry_at[aid] = now + min(600.0, 2 * max(5.0, self._retry_at.get(aid, now) - now + 5))
            else:
                self._retry_at.pop(aid, None)
                n += 1
        return n

    def recover(self) -> None:
        """At start: downloads cut off by a stop are pending again; uploads never sent for a week are dropped."""
        with self.engine.store.write() as c:
            c.execute("UPDATE attachments SET state = 'pending' WHERE state = 'downloading'")
            stale = c.execute("SELECT id, path FROM uploads WHERE created_at < ?", (now_ms() - UPLOAD_KEEP_MS,)).fetchall()
            c.execute("DELETE FROM uploads WHERE created_at < ?", (now_ms() - UPLOAD_KEEP_MS,))
        for r in stale:
            Path(r["path"]).unlink(missing_ok=True)

    def run(self) -> None:
        try:
            self.recover()
        except Exception:
            log.exception("attachment recovery failed")
        while not self.stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("attachment downloader pass failed")
            self.event.wait(self.interval)
            self.event.clear()
