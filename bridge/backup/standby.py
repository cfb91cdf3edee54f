"""The standby installation: messages sent while you had no device (issue 15 item 6; PROTOCOL.md §12.5).

A standby is one more installation of the wallet, authorized by a wallet-signed statement like any
other, registered on the home relays (statement, signed prekey, last-resort ML-KEM prekey, a batch of
one-time prekeys, relay list), and then never run: nobody reads its inbox, tops up its prekeys or
sends from it. Its secrets (Ed25519 and X25519 keys, the private half of every prekey it uploaded)
are a *record* that the caller keeps sealed in the store (``state.save_standby``) and that every backup
carries as ``["standby", record]``, so they open with the recovery key. Senders, and the wallet's own
installations, fan out to it because it is an active installation of the wallet, and the relays queue
for it. After a restore on a new device, :func:`drain_standby` reads its whole inbox, decrypts it with
a throw-away engine rebuilt from the record (which publishes nothing), and imports the messages
(idempotent by message id); :func:`rotate_standby` then makes a new standby and publishes the
wallet-signed revocation of the old one.

Cost and forward-secrecy window: docs/SECURITY.md "Backups and the standby installation".

The record (a dict of CBOR types; ``bytes`` stay bytes)::

    {"version": 1, "address": str, "installation_id": str, "signing_key": 32 B, "identity_key": 32 B,
     "statement": bytes (the wallet-signed authorization record), "prekeys": [[kind, id, private, public], ...],
     "created_at": ms, "relays": [url, ...], "vault": str (BackupKeys.vault of the recovery key it was made for)}
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bridge import identity
from bridge.crypto import primitives as P
from bridge.keys import Secrets
from bridge.protocol import prekeys as PK
from bridge.protocol.ids import installation_id as make_iid
from bridge.protocol.ids import is_installation_id
from bridge.relay.client import RelayError, RelayUnavailable
from bridge.relay.urls import RelayUrlError, canonical_url
from bridge.store import Store, now_ms

__all__ = [
    "StandbyError",
    "RECORD_VERSION",
    "MAX_PREKEYS",
    "MAX_DRAIN_ENVELOPES",
    "FETCH_LIMIT",
    "create_standby",
    "drain_standby",
    "rotate_standby",
    "check_record",
    "public_info",
]

log = logging.getLogger("parley.standby")

RECORD_VERSION = 1
#: Most prekeys a record may carry (a standby uploads 1 + 1 + OTPK_TARGET + PQ_OTPK_TARGET = 72).
MAX_PREKEYS = 1024
#: Most relays a record may name.
MAX_RELAYS = 16
#: Envelopes read from one relay at most (the relay's default quota is 10,000 per inbox): a hostile
#: relay serving an endless inbox cannot keep a restore busy for ever.
MAX_DRAIN_ENVELOPES = 50_000
#: Envelopes asked for per fetch.
FETCH_LIMIT = 500

_KEY_LEN = {PK.SPK: 32, PK.OTPK: 32, PK.PQ_LRPK: P.MLKEM768_SEED_LEN, PK.PQ_OTPK: P.MLKEM768_SEED_LEN}
_FIELDS = {"version", "address", "installation_id", "signing_key", "identity_key", "statement", "prekeys", "created_at", "relays", "vault"}


class StandbyError(Exception):
    """The standby cannot be made, drained or rotated; the message is one line saying why."""


# --- the record -------------------------------------------------------------------------------


def _public(kind: str, private: bytes) -> bytes:
    return P.mlkem768_keypair(private)[1] if kind in (PK.PQ_LRPK, PK.PQ_OTPK) else P.x25519_public(private)


def check_record(obj: Any) -> dict[str, Any]:
    """A standby record read from a store or an archive (hostile until checked): every field's type and
    size, the installation id made from its keys, the statement authorizing exactly that installation for
    that address with those keys, each prekey's public half made from its private half.

    Raises:
        StandbyError: the first thing that is wrong, in one line.
    """
    if not isinstance(obj, dict) or set(obj) != _FIELDS:
        raise StandbyError("standby record: not a map of the expected fields")
    if type(obj["version"]) is not int or obj["version"] != RECORD_VERSION:
        raise StandbyError(f"standby record: unknown version (this program reads version {RECORD_VERSION})")
    try:
        address = identity.checksum_address(obj["address"])
    except (identity.IdentityError, TypeError):
        raise StandbyError("standby record: address is not an address") from None
    iid = obj["installation_id"]
    if not is_installation_id(iid):
        raise StandbyError("standby record: installation_id is not an installation id")
    for name in ("signing_key", "identity_key"):
        if not isinstance(obj[name], bytes) or len(obj[name]) != 32:
            raise StandbyError(f"standby record: {name} must be 32 bytes")
    signing_pub, identity_pub = P.ed25519_public(obj["signing_key"]), P.x25519_public(obj["identity_key"])
    if make_iid(signing_pub, identity_pub) != iid:
        raise StandbyError("standby record: installation_id is not made from its keys")
    if not isinstance(obj["statement"], bytes) or len(obj["statement"]) > identity.MAX_RECORD_BYTES:
        raise StandbyError("standby record: statement is not a statement record")
    try:
        # EOA only: a standby exists only where the bridge holds the wallet's own key (_wallet_key).
        st = identity.verify(identity.SignedStatement.from_record(obj["statement"]))
    except (identity.IdentityError, ValueError):
        raise StandbyError("standby record: the statement does not parse or is not signed by the wallet") from None
    if (st.action, st.address, st.installation_id, st.signing_key, st.identity_key) != ("authorize", address, iid, signing_pub, identity_pub):
        raise StandbyError("standby record: the statement does not authorize this installation for this address")
    prekeys = obj["prekeys"]
    if not isinstance(prekeys, list) or not 0 < len(prekeys) <= MAX_PREKEYS:
        raise StandbyError(f"standby record: prekeys must be a list of 1..{MAX_PREKEYS}")
    seen: set[tuple[str, int]] = set()
    checked: list[list[Any]] = []
    for item in prekeys:
        if not isinstance(item, list) or len(item) != 4:
            raise StandbyError("standby record: a prekey is not [kind, id, private, public]")
        kind, pid, private, public = item
        if kind not in _KEY_LEN or type(pid) is not int or not 0 <= pid < 2**32 or (kind, pid) in seen:
            raise StandbyError("standby record: a prekey has a bad or repeated kind/id")
        if not isinstance(private, bytes) or len(private) != _KEY_LEN[kind] or not isinstance(public, bytes):
            raise StandbyError(f"standby record: prekey {kind}/{pid} has a private half of the wrong size")
        try:
            ok = _public(kind, private) == public
        except Exception:  # noqa: BLE001 - a backend refusing a crafted key is the same answer
            ok = False
        if not ok:
            raise StandbyError(f"standby record: prekey {kind}/{pid}'s public half is not made from its private half")
        seen.add((kind, pid))
        checked.append([kind, pid, private, public])
    if not {PK.SPK, PK.PQ_LRPK} <= {k for k, _ in seen}:
        raise StandbyError("standby record: the signed prekey or the last-resort ML-KEM prekey is missing")
    if type(obj["created_at"]) is not int or obj["created_at"] < 0:
        raise StandbyError("standby record: created_at is not a time")
    relays = obj["relays"]
    if not isinstance(relays, list) or not 0 < len(relays) <= MAX_RELAYS or not all(isinstance(u, str) for u in relays):
        raise StandbyError(f"standby record: relays must be a list of 1..{MAX_RELAYS} URLs")
    try:
        relays = [canonical_url(u) for u in relays]
    except RelayUrlError as exc:
        raise StandbyError(f"standby record: {exc}") from None
    vault = obj["vault"]
    if not isinstance(vault, str) or len(vault) != 64 or any(ch not in "0123456789abcdef" for ch in vault):
        raise StandbyError("standby record: vault is not 64 lowercase hex digits")
    return {**obj, "address": address, "prekeys": checked, "relays": relays}


def public_info(record: dict[str, Any] | None) -> dict[str, Any]:
    """What a status may show of a record: ``{"installation_id", "created_at"}`` (None for no record)."""
    if not record:
        return {"installation_id": None, "created_at": None}
    return {"installation_id": record.get("installation_id"), "created_at": record.get("created_at")}


# --- making and rotating ------------------------------------------------------------------------


def _wallet_key(engine: Any) -> bytes:
    """The wallet key, if this bridge holds it for the address it speaks for.

    Raises:
        StandbyError: a browser wallet (the bridge's own key is not the wallet's).
    """
    secrets: Secrets = engine.secrets
    if secrets.address != engine.address:
        raise StandbyError(
            f"this installation speaks for {engine.address}, whose key is in your browser wallet: a standby "
            "installation needs a statement the wallet signs, which this bridge cannot make (history is still "
            "backed up; messages that arrive while you have no device are not)"
        )
    return secrets.wallet_key


def _temp_dir(parent: Path | None) -> Path:
    return Path(tempfile.mkdtemp(prefix=".standby-", dir=str(parent) if parent is not None else None))


def _temp_engine(directory: Path, secrets: Secrets, address: str, statement: bytes, relays: Sequence[str], engine: Any = None, **kwargs: Any) -> Any:
    from bridge.engine import Engine

    ident = {"address": address, "installation_id": secrets.installation_id, "record": statement.hex()}
    return Engine(
        Store(directory / "standby.db"),
        secrets,
        ident,
        relays[0],
        home_relays=relays[1:],
        directory_relays=engine.directory_relays if engine is not None else (),
        verifier=engine.verifier if engine is not None else None,
        **kwargs,
    )


def _close(tmp: Any) -> None:
    try:
        tmp.close_clients()
    finally:
        tmp.store.close()


def _revoke(engine: Any, wallet_key: bytes, iid: str) -> None:
    signed = identity.sign_statement(identity.revoke_statement(engine.address, iid), wallet_key)
    engine.publish_record(engine.address, signed.to_record())


def _refresh_own(engine: Any) -> None:
    """Our own cache now, so the engine's next message fans out to the standby (and not to a revoked one)."""
    try:
        engine.peers.lookup([engine.address], scheduled=True)
    except (RelayUnavailable, RelayError) as exc:
        log.warning("could not refresh our own installations after changing the standby: %s", exc)


def create_standby(engine: Any, keys: Any, *, clock: Callable[[], int] = now_ms) -> dict[str, Any]:
    """Make a standby installation of ``engine``'s wallet, register it on ``engine``'s home relays (statement
    on the home and directory relays, prekeys, relay list: ``Engine.register`` of a throw-away engine
    over a temporary store), and return its record (see the module). ``keys``: the BackupKeys of the
    recovery key whose backups will carry the record (its vault is written into the record).

    Raises:
        StandbyError: a browser wallet, no recovery key, or the relays refused (the statement, if one
            relay took it, is revoked again: no half-registered standby is left authorized).
    """
    from bridge.backup.recovery import BackupKeys

    if not isinstance(keys, BackupKeys):
        raise StandbyError("a standby installation needs a recovery key (its secrets travel only in backups)")
    vault = keys.vault
    wallet_key = _wallet_key(engine)
    from bridge.keys import generate_secrets

    secrets = generate_secrets(wallet_key)
    address = engine.address
    statement = identity.sign_statement(
        identity.authorize_statement(address, secrets.installation_id, secrets.signing_pub, secrets.identity_pub), wallet_key
    ).to_record()
    relays = list(engine.home_relays)
    directory = _temp_dir(None)
    try:
        tmp = _temp_engine(directory, secrets, address, statement, relays, engine)
        try:
            try:
                tmp.register()
            except (RelayUnavailable, RelayError) as exc:
                try:
                    _revoke(engine, wallet_key, secrets.installation_id)
                except (RelayUnavailable, RelayError) as again:
                    log.warning("could not revoke the standby %s that failed to register: %s", secrets.installation_id, again)
                raise StandbyError(f"could not register the standby installation: {exc}") from None
            with tmp.store.write() as c:
                rows = c.execute("SELECT kind, id, public FROM prekeys WHERE uploaded = 1 AND retired_at IS NULL ORDER BY kind, id").fetchall()
                prekeys = [[r["kind"], r["id"], tmp.prekeys.private(c, r["kind"], r["id"]), bytes(r["public"])] for r in rows]
        finally:
            _close(tmp)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    record = {
        "version": RECORD_VERSION,
        "address": address,
        "installation_id": secrets.installation_id,
        "signing_key": secrets.signing_key,
        "identity_key": secrets.identity_key,
        "statement": statement,
        "prekeys": prekeys,
        "created_at": clock(),
        "relays": relays,
        "vault": vault,
    }
    _refresh_own(engine)
    log.info("standby installation %s registered on %s", secrets.installation_id, ", ".join(relays))
    return record


def rotate_standby(engine: Any, keys: Any, old: dict[str, Any] | None) -> dict[str, Any]:
    """Make a new standby (:func:`create_standby`), then publish the wallet-signed revocation of ``old``
    (if any) on the home and directory relays. Returns the new record, for the caller to save.

    Raises:
        StandbyError: as create_standby; ``old`` is not a standby of this wallet (or names this very
            installation); the revocation was refused (then the new standby is revoked again and
            ``old`` stays what it was).
    """
    if old is not None:
        old = check_record(old)
        if old["address"] != engine.address:
            raise StandbyError(f"the old standby belongs to {old['address']}, not to {engine.address}")
        if old["installation_id"] == engine.installation_id:
            raise StandbyError("the old standby record names this installation; refusing to revoke it")
    new = create_standby(engine, keys)
    if old is None:
        return new
    wallet_key = _wallet_key(engine)
    try:
        _revoke(engine, wallet_key, old["installation_id"])
    except (RelayUnavailable, RelayError) as exc:
        try:
            _revoke(engine, wallet_key, new["installation_id"])
        except (RelayUnavailable, RelayError) as again:
            log.warning("could not revoke the new standby %s either: %s", new["installation_id"], again)
        raise StandbyError(f"could not revoke the old standby {old['installation_id']}: {exc}") from None
    _refresh_own(engine)
    log.info("standby %s revoked; %s replaces it", old["installation_id"], new["installation_id"])
    return new


# --- draining -----------------------------------------------------------------------------------


def _read_inbox(tmp: Any, url: str, progress: Callable[[int], None] | None, counts: dict[str, int]) -> dict[str, Any]:
    """Every envelope of the standby's inbox on one relay, through ``tmp.process`` (quarantine, digest
    de-duplication across relays, exactly once). Reads only: authenticate, fetch."""
    client = tmp.client(url)
    read = 0
    token = client.authenticate(tmp.installation_id, tmp.secrets.signing_key)
    while read < MAX_DRAIN_ENVELOPES:
        after = tmp.cursor(url)
        try:
            batch = client.fetch(tmp.topic, after, FETCH_LIMIT, token=token)
        except RelayError as exc:
            if exc.status != 401:
                raise
            client.forget_token(tmp.installation_id)
            token = client.authenticate(tmp.installation_id, tmp.secrets.signing_key)
            batch = client.fetch(tmp.topic, after, FETCH_LIMIT, token=token)
        for env in batch[: MAX_DRAIN_ENVELOPES - read]:
            if tmp.process(env, url) is not None:
                counts["received"] += 1
            read += 1
            counts["envelopes"] += 1
            if progress is not None:
                progress(counts["envelopes"])
        if len(batch) < FETCH_LIMIT or tmp.cursor(url) <= after:
            break  # the end, or a relay that does not move forward (it would serve the same page for ever)
    return {"url": url, "envelopes": read, "error": None}


def drain_standby(
    home: Any,
    store: Store,
    secrets: Secrets,
    record: dict[str, Any],
    relays: Sequence[str],
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Read the standby's whole inbox on each of ``relays`` (default: the relays its record names),
    decrypt it with a throw-away engine over a temporary store in ``home`` rebuilt from ``record``
    (passive: it uploads no prekey, sends no receipt, registers nothing), and import what it decrypted
    into ``store`` (snapshot.import_records: idempotent by message id, one transaction). Call it before
    :func:`rotate_standby`: a revoked installation can no longer read its inbox. ``progress(envelopes read
    so far)`` is called after each envelope (there is no total to show: the relays do not say).

    Returns ``{"messages": added, "skipped": already there, "received": decrypted, "envelopes": read,
    "quarantined": refused envelopes, "relays": [{"url", "envelopes", "error"}]}``.

    Raises:
        StandbyError: a bad record, one of another wallet, or no relay could be read.
    """
    record = check_record(record)
    address = identity.checksum_address(home.identity()["address"])
    if record["address"] != address:
        raise StandbyError(f"this standby belongs to {record['address']}, not to {address}")
    try:
        urls = list(dict.fromkeys(canonical_url(u) for u in relays)) or record["relays"]
    except RelayUrlError as exc:
        raise StandbyError(str(exc)) from None
    sb_secrets = Secrets(
        wallet_key=secrets.wallet_key, signing_key=record["signing_key"], identity_key=record["identity_key"], storage_key=P.random_bytes(32)
    )
    directory = _temp_dir(home.path)  # decrypted messages live here for a moment: inside the 0700 home
    counts = {"received": 0, "envelopes": 0}
    results: list[dict[str, Any]] = []
    try:
        tmp = _temp_engine(directory, sb_secrets, address, record["statement"], urls, passive=True)
        try:
            tmp.contacts_file = home.contacts_file  # first contact is decided as the real installation would
            with tmp.store.write() as c:
                for kind, pid, private, public in record["prekeys"]:
                    tmp.prekeys.adopt(c, kind, pid, private, public, record["created_at"])
                for r in store.read("SELECT peer, state, previous, updated_at, held, dropped FROM consent"):
                    c.execute(
                        "INSERT INTO consent(peer, state, previous, updated_at, held, dropped) VALUES (?, ?, ?, ?, ?, ?)", tuple(r)
                    )
            for url in urls:
                try:
                    results.append(_read_inbox(tmp, url, progress, counts))
                except (RelayUnavailable, RelayError) as exc:
                    log.warning("could not read the standby's inbox on %s: %s", url, exc)
                    results.append({"url": url, "envelopes": 0, "error": str(exc)})
            if all(r["error"] is not None for r in results):
                raise StandbyError(f"could not read the standby's inbox: {'; '.join(r['url'] + ': ' + r['error'] for r in results)}")
            quarantined = tmp.quarantine_count()
            report = _import(home, store, secrets, directory, tmp, address)
        finally:
            _close(tmp)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "messages": report.messages_added,
        "skipped": report.messages_skipped,
        "received": counts["received"],
        "envelopes": counts["envelopes"],
        "quarantined": quarantined,
        "relays": results,
    }


#: Records of the temporary store that are carried into the real one: what the standby received.
#: Not its settings, contacts, identity or wallet (those are the real home's), nor anything it queued.
_DRAINED = ("conversation", "message", "reaction", "attachment", "consent")


def _drained(records: Any) -> Any:
    """The temporary store's export reduced to what the standby received, as a stream import_records takes."""
    n = 0
    for rec in records:
        tag = rec[0]
        if tag == "end":
            yield ["end", {"records": n}]
            return
        if tag == "meta" or (tag in _DRAINED and not (tag == "message" and rec[1].get("state") == "queued")):
            n += 1
            yield rec


def _import(home: Any, store: Store, secrets: Secrets, directory: Path, tmp: Any, address: str) -> Any:
    """Export the temporary store (snapshot.export_records over a temporary home) and import what the
    standby received into the real store (snapshot.import_records: one transaction, idempotent by id)."""
    import json

    from bridge.backup import snapshot
    from bridge.home import Home

    tmp_home = Home(directory)
    ident = {"version": 1, "address": address, "did": identity.did(address), "installation_id": tmp.installation_id,
             "signing_pub": tmp.secrets.signing_pub.hex(), "identity_pub": tmp.secrets.identity_pub.hex(), "record": tmp.record.hex()}
    (directory / "identity.json").write_text(json.dumps(ident))
    records = snapshot.export_records(tmp_home, tmp.store, tmp.secrets, purpose="transfer", include_files=False)
    return snapshot.import_records(home, store, secrets, _drained(records), expect_address=address)
