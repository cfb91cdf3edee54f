"""Shared helpers for the relay tests: real installations, real signed statements, real prekeys.

Imported by tests/test_relay_*.py (not a conftest: tests/conftest.py belongs to the integrator).
"""

from __future__ import annotations

import itertools
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import quote

from bridge.crypto import primitives as P
from bridge.identity import authorize_statement, revoke_statement, sign_statement
from bridge.protocol.ids import inbox_topic, installation_id
from bridge.protocol.prekeys import PQ_LRPK, PQ_OTPK, SPK, OneTimePrekey, PrekeyUpload, sign_prekey
from bridge.relay.sqlite_store import SQLiteStorage
from bridge.relay.storage import Storage

if TYPE_CHECKING:
    import trustme

    from bridge.relay.server import RelaySettings

__all__ = [
    "WALLET_KEY",
    "WALLET_ADDRESS",
    "OTHER_WALLET_KEY",
    "OTHER_WALLET_ADDRESS",
    "Installation",
    "make_installation",
    "authorize_record",
    "revoke_record",
    "make_upload",
    "STORAGE_BACKENDS",
    "open_backend",
    "PG_SERVER_URL",
    "postgres_available",
    "tls_files",
    "postgres_schema",
    "wait_until",
    "storage_backend",
    "UNLIMITED",
    "unlimited_settings",
    "serve_relay",
    "crafted_identity",
]

#: Fixed test wallet keys (well-known throwaway keys; never hold funds).
WALLET_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
OTHER_WALLET_KEY = bytes.fromhex("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")


def _address(key: bytes) -> str:
    from eth_account import Account

    return str(Account.from_key(key).address)


WALLET_ADDRESS = _address(WALLET_KEY)
OTHER_WALLET_ADDRESS = _address(OTHER_WALLET_KEY)

_ISSUED = itertools.count(1_700_000_000)


@dataclass(frozen=True)
class Installation:
    signing_priv: bytes
    signing_pub: bytes
    identity_priv: bytes
    identity_pub: bytes

    @property
    def iid(self) -> str:
        return installation_id(self.signing_pub, self.identity_pub)

    @property
    def topic(self) -> str:
        return inbox_topic(self.iid)


def make_installation() -> Installation:
    spriv, spub = P.ed25519_keypair()
    xpriv, xpub = P.x25519_keypair()
    return Installation(spriv, spub, xpriv, xpub)


def authorize_record(inst: Installation, wallet_key: bytes = WALLET_KEY, *, issued_at: int | None = None) -> bytes:
    stmt = authorize_statement(
        _address(wallet_key), inst.iid, inst.signing_pub, inst.identity_pub,
        issued_at=next(_ISSUED) if issued_at is None else issued_at,
    )
    return sign_statement(stmt, wallet_key).to_record()


def revoke_record(inst: Installation, wallet_key: bytes = WALLET_KEY) -> bytes:
    stmt = revoke_statement(_address(wallet_key), inst.iid, issued_at=next(_ISSUED))
    return sign_statement(stmt, wallet_key).to_record()


_MLKEM_PUB = P.mlkem768_keypair()[1]  # one real ML-KEM public key, reused (the relay never uses it)


def make_upload(
    inst: Installation,
    *,
    otpk_ids: range | list[int] = range(0),
    pq_ids: range | list[int] = range(0),
    lrpk: bool = True,
    issued_at: int | None = None,
    signer: bytes | None = None,
) -> bytes:
    """A real signed prekey upload (signed by ``signer``, default the installation's key)."""
    key = inst.signing_priv
    upload = PrekeyUpload(
        installation_id=inst.iid,
        issued_at=int(time.time() * 1000) if issued_at is None else issued_at,
        spk=sign_prekey(key, SPK, 1, P.x25519_keypair()[1]),
        otpks=tuple(OneTimePrekey(i, P.x25519_keypair()[1]) for i in otpk_ids),
        pq_otpks=tuple(sign_prekey(key, PQ_OTPK, i, _MLKEM_PUB) for i in pq_ids),
        pq_lrpk=sign_prekey(key, PQ_LRPK, 0, _MLKEM_PUB) if lrpk else None,
    )
    return upload.sign(signer or key)


#: Storage backends the parametrized tests run against.
STORAGE_BACKENDS = ["sqlite", "postgres"]

#: The PostgreSQL server the tests use (CI: 127.0.0.1:5432, trust auth). Override with PARLEY_TEST_PG_URL.
PG_SERVER_URL = os.environ.get("PARLEY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

_pg_probe: list[str | None] = []


def postgres_available() -> None:
    """Skip the calling test when no PostgreSQL server answers; under ``CI=true`` fail instead."""
    import pytest

    if not _pg_probe:
        try:
            import psycopg

            psycopg.connect(PG_SERVER_URL, connect_timeout=3).close()
            _pg_probe.append(None)
        except Exception as exc:  # noqa: BLE001 - any failure means "no usable server"
            _pg_probe.append(f"no PostgreSQL server at {PG_SERVER_URL}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
    reason = _pg_probe[0]
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL is required)")
        pytest.skip(reason=reason)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema ``parley_test_<random>`` on the test server; yields a URL selecting it.

    The schema (and everything in it) is dropped on exit. Skips/fails like :func:`postgres_available`.
    """
    postgres_available()
    import psycopg

    schema = f"parley_test_{os.urandom(6).hex()}"
    with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_SERVER_URL else "?"
    url = f"{PG_SERVER_URL}{sep}options={quote(f'-csearch_path={schema}', safe='')}"
    try:
        yield url
    finally:
        with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def open_backend(name: str, tmp_path: Path, pg_url: str | None = None) -> Storage:
    """Open a fresh storage of backend ``name`` (``pg_url`` from :func:`postgres_schema` for postgres)."""
    if name == "sqlite":
        return SQLiteStorage(str(tmp_path / f"relay-{os.urandom(4).hex()}.db"))
    if name == "postgres":
        from bridge.relay.postgres_store import PostgresStorage

        if pg_url is None:
            raise ValueError("the postgres backend needs a URL from postgres_schema()")
        return PostgresStorage(pg_url)
    raise ValueError(f"unknown storage backend {name}")


@contextmanager
def storage_backend(name: str, tmp_path: Path) -> Iterator[Storage]:
    """An open storage of backend ``name`` (for ``pytest.fixture(params=STORAGE_BACKENDS)``): PostgreSQL
    in a fresh schema, SQLite in ``tmp_path``; closed afterwards."""
    if name == "postgres":
        with postgres_schema() as url:
            st = open_backend("postgres", tmp_path, url)
            try:
                yield st
            finally:
                st.close()
    else:
        st = open_backend(name, tmp_path)
        try:
            yield st
        finally:
            st.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or the deadline passes (returns the last result)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


#: Every test client shares 127.0.0.1, so per-client rate limits would meet each other: lift them.
UNLIMITED = 1e6


def unlimited_settings(**overrides: object) -> "RelaySettings":
    """Relay settings with every rate limit lifted (claims per target too: the engine and prekey
    tests drain prekeys on purpose; the limits have their own tests in test_relay_hostile)."""
    from bridge.relay.server import RelaySettings

    lifted: dict[str, object] = {}
    for name in ("publish", "claim", "claim_target", "auth", "identity", "inbox"):
        lifted[f"{name}_rate"] = UNLIMITED
        lifted[f"{name}_burst"] = 10**6
    lifted.update(overrides)
    return RelaySettings(**lifted)  # type: ignore[arg-type]


@contextmanager
def serve_storage(storage: Any, settings: "RelaySettings | None" = None, *, wrap: "Callable[[Any], Any] | None" = None) -> Iterator[str]:
    """A relay app over ``storage`` (any backend) on its own thread (werkzeug, threaded); yields its URL.
    ``wrap`` takes the relay's WSGI app and returns the one to serve (a test's doctored relay)."""
    import threading

    from werkzeug.serving import make_server

    from bridge.relay.server import create_app

    app = create_app(storage, settings=settings or unlimited_settings())
    server = make_server("127.0.0.1", 0, wrap(app) if wrap else app, threaded=True)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        t.join(5)
        server.server_close()


@contextmanager
def serve_relay(db: Path, settings: "RelaySettings | None" = None, *, wrap: "Callable[[Any], Any] | None" = None) -> Iterator[str]:
    """:func:`serve_storage` over SQLite at ``db``."""
    storage = SQLiteStorage(str(db))
    try:
        with serve_storage(storage, settings, wrap=wrap) as url:
            yield url
    finally:
        storage.close()


def crafted_identity(storage: Storage, authorizations: int) -> str:
    """An attacker's wallet whose log authorizes ``authorizations`` installations that never upload
    prekeys (issue 8 item 3). The records are genuine signed statements, as the attacker would publish
    them one by one; they are written straight into the relay's storage (log and index, as the relay's
    own publish_identity does) only to save one signature check per record over HTTP. Returns the address."""
    from bridge import identity
    from bridge.relay.storage import IdentityEntry

    wallet = P.random_bytes(32)
    address = ""
    for _ in range(authorizations):
        inst = make_installation()
        signed = identity.SignedStatement.from_record(authorize_record(inst, wallet))
        address = identity.verify(signed).address
        storage.append_identity(
            address, signed.record_id(), signed.to_record(),
            IdentityEntry("authorize", inst.iid, inst.signing_pub, inst.identity_pub), max_records=256,
        )
    return address


def tls_files(directory: Path, ca: "trustme.CA", *names: str) -> tuple[str, str, str]:
    """Write (certificate chain, key, CA bundle) PEM files into ``directory`` for a server certificate
    from ``ca`` naming ``names`` (``parley relay --tls-cert/--tls-key``, ``PARLEY_CA_BUNDLE``)."""
    cert = ca.issue_cert(*names)
    chain, key, bundle = directory / f"chain-{names[0]}.pem", directory / f"key-{names[0]}.pem", directory / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))  # key first, then the chain: one file works for both
    cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(bundle))
    return str(chain), str(key), str(bundle)


# ---- a raw WebSocket client, for attacks a library client would not play ----------------------


def ws_upgrade_request(port: int, path: str = "/v1/subscribe") -> bytes:
    """The opening handshake of a WebSocket to 127.0.0.1:``port``."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def read_http_head(sock: Any) -> bytes:
    """An answer's status line and headers, blank line included, and not one byte more (a client
    waits for the 101 before its first frame, RFC 6455 §4.1; what follows is left in the socket)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    return head


def ws_client_frame(opcode: int, body: bytes) -> bytes:
    """One final, masked client frame (text 0x1, ping 0x9, …) of fewer than 65,536 bytes."""
    mask = os.urandom(4)
    size = bytes([0x80 | len(body)]) if len(body) < 126 else bytes([0x80 | 126]) + len(body).to_bytes(2, "big")
    return bytes([0x80 | opcode]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body))
