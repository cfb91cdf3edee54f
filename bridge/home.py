"""The Parley home directory: where one installation keeps its keys, settings and database.

Layout (directory 0700, every file 0600)::

    keys.json        wallet + installation private keys, sealed with the passphrase (scrypt, AES-256-GCM)
    identity.json    public facts: address, installation id, public keys, the signed statement
    config.json      settings (home and directory relays, port), see SETTINGS
    parley.db        messages, sessions, outbox, cursors (SQLite, WAL)
    relay.db         the embedded relay's storage, when `parley run` embeds one
    daemon.json      present while `parley run` is up: its URL and a control token for the CLI
    local_api_key    the bridge's Ed25519 seed for the local API: it proves itself to the extension
    contacts.json    names you gave to addresses (`parley contacts add`)
    names.db         cached answers of name services (Lens, ENS, Farcaster), see bridge/resolve
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from bridge import nameservices

__all__ = ["Home", "HomeError", "Setting", "SETTINGS", "DEFAULT_PORT", "resolve_home", "write_private"]

DEFAULT_PORT = 8737


class HomeError(Exception):
    """The home directory is missing, not initialised, or unsafe."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str


#: Every setting in config.json, with its default and help. tests/test_cli.py checks the README documents each.
SETTINGS: tuple[Setting, ...] = (
    Setting("relays", [], "Home relays: the 1-5 relay URLs that hold your inbox, the first primary (`parley relays set`). Empty: the relay embedded in `parley run` (this machine only)."),
    Setting("directory_relays", [], "Relays where you and senders look up identity logs and relay lists not found on home relays (`parley relays directory`) [env PARLEY_DIRECTORY_RELAYS, comma-separated]."),
    Setting("relay_grace_days", 14, "Days a replaced home relay is still read after `parley relays set`, so nothing in flight is lost."),
    Setting("previous_relays", [], "Replaced home relays still read, with the time (seconds) their grace period ends (kept by `parley relays set`)."),
    Setting("embedded_relay", False, "True when `parley run` recorded its embedded relay as the home relay."),
    Setting("relay_pointers", True, "At a first contact no relay knows, ask the ENS RPC (eth_rpc_url) and Lens API (lens_api_url) for the wallet's `parley.relays` pointer: on by default; it tells those endpoints which wallet this IP is about to write to. false: never asked (names still resolve)."),
    Setting("insecure_relays", False, "Allow plain http:// relays on other machines (`--insecure`); off: only https, or http to this machine."),
    Setting("relay_url", None, "Older homes' single relay URL, read as the one home relay; replaced by `relays`."),
    Setting("port", DEFAULT_PORT, "Port `parley run` listens on (127.0.0.1 only)."),
    Setting("chain_id", 1, "EIP-155 chain id written into installation statements."),
    Setting("retention_days", 30, "How long the embedded relay keeps envelopes."),
    Setting("prekey_rotation_days", 7, "Days between replacing the signed X25519 prekey and the last-resort ML-KEM prekey."),
    Setting("prekey_grace_days", 30, "Days a replaced prekey's private half is kept (first messages made with it still open), then deleted."),
    Setting("prekey_check_seconds", 60, "Seconds between the daemon's checks that the relay still has enough one-time prekeys (jittered)."),
    Setting("extension_ids", ["cjhgnfckfielldaiipkgieemaigbpmoe"], "Chrome extension ids allowed to use the local API: Parley's own (extension/EXTENSION_ID) unless listed; a store-signed build has the store's id. Firefox installs are pinned at pairing instead [env PARLEY_EXTENSION_IDS, comma-separated]."),
    Setting("lens_api_url", nameservices.LENS_API_URL, "Lens API v3 GraphQL endpoint for lens:NAME (the public mainnet API by default; README \"Name services\") [env PARLEY_LENS_API_URL]. off: Lens names only from contacts."),
    Setting("eth_rpc_url", nameservices.ETH_RPC_URL, "Ethereum mainnet JSON-RPC URL: ENS names and EIP-1271/6492 wallets on chain 1 (PublicNode's keyless RPC by default) [env PARLEY_ETH_RPC_URL]. off: no ENS, no smart wallets on chain 1."),
    Setting("ens_registry", None, "ENS registry address (default: mainnet's) [env PARLEY_ENS_REGISTRY]."),
    Setting("ens_universal_resolver", None, "ENS Universal Resolver address web3 resolves through (default: web3's mainnet one) [env PARLEY_ENS_UNIVERSAL_RESOLVER]."),
    Setting("farcaster_hub_url", None, "Farcaster hub HTTP API base URL for farcaster:FID|FNAME [env PARLEY_FARCASTER_HUB_URL]."),
    Setting("op_rpc_url", None, "OP Mainnet JSON-RPC URL: Farcaster IdRegistry custodyOf fallback, smart wallets on chain 10 [env PARLEY_OP_RPC_URL]."),
    Setting("farcaster_id_registry", None, "Farcaster IdRegistry address (default: 0x00000000Fc6c5F01Fc30151999387Bb99A9f489b) [env PARLEY_FARCASTER_ID_REGISTRY]."),
    Setting("lens_chain_rpc_url", nameservices.LENS_CHAIN_RPC_URL, "Lens Chain (chain id 232) JSON-RPC URL: verifies Lens account owners and managers (the public https://rpc.lens.xyz by default) [env PARLEY_LENS_CHAIN_RPC_URL]. off: Lens accounts unverifiable."),
    Setting("peer_refresh_minutes", 10, "Minutes between the daemon's scheduled refreshes of the identity cache (each pass at 0.5–1.5× this, PROTOCOL.md §6.5). Your peers learn of your new installations, such as a standby, at their next pass (fractions allowed)."),
    Setting("read_receipts", True, "Send read receipts when you read a conversation (never to message requests); off: none are sent."),
    Setting("name_cache_ttl", 300, "Seconds a resolved name is cached (a stale answer is used, marked, when its source is down) [env PARLEY_NAME_CACHE_TTL]."),
    Setting("backup_remote", False, "Keep an encrypted, incremental backup on every home relay, updated in the background by `parley run` (`parley backup remote on|off`; PROTOCOL.md §12.4). It holds attachment locators and keys, not file bytes."),
    Setting("backup_interval_minutes", 15, "Minutes between remote backups while something changed (fractions allowed); a relay that was down is retried sooner."),
    Setting("backup_standby", True, "With remote backup on, keep a standby installation that receives what is sent while you have no device; a restore drains it (PROTOCOL.md §12.5). Not possible for a browser wallet."),
)


def resolve_home(option: str | None) -> Path:
    """--home, else $PARLEY_HOME, else the platform's user data directory."""
    raw = option or os.environ.get("PARLEY_HOME") or platformdirs.user_data_dir("parley", appauthor=False)
    return Path(raw).expanduser().absolute()


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write a file atomically with mode 0600 (temp file in the same directory, fsync, rename)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if exclusive and path.exists():
        raise FileExistsError(str(path))
    tmp = path.with_name(f".{path.name}.{_secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Home:
    def __init__(self, path: Path) -> None:
        self.path = path

    keys_file = property(lambda self: self.path / "keys.json")
    identity_file = property(lambda self: self.path / "identity.json")
    config_file = property(lambda self: self.path / "config.json")
    db_file = property(lambda self: self.path / "parley.db")
    relay_db_file = property(lambda self: self.path / "relay.db")
    daemon_file = property(lambda self: self.path / "daemon.json")
    contacts_file = property(lambda self: self.path / "contacts.json")

    def exists(self) -> bool:
        return self.keys_file.exists() and self.identity_file.exists()

    def create(self) -> None:
        """Create the directory 0700 (or tighten an empty existing one)."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)

    def require(self) -> None:
        """Raises HomeError unless initialised and private."""
        if not self.exists():
            raise HomeError(f"no Parley installation in {self.path}: run `parley init` first (or pass --home)")
        mode = stat.S_IMODE(os.stat(self.path).st_mode)
        if mode & 0o077:
            raise HomeError(f"{self.path} is accessible by other users (mode {mode:o}); run: chmod 700 {self.path}")

    # --- json files --------------------------------------------------------

    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise HomeError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise HomeError(f"{path} is not a JSON object")
        return data

    def config_file_values(self) -> dict[str, Any]:
        """What config.json sets, checked (bridge/config.py).

        Raises:
            HomeError: unreadable; ConfigError (a HomeError): an unknown key or a bad value.
        """
        from bridge.config import check_config

        data = self._read_json(self.config_file)
        return check_config(data, str(self.config_file)) if data else data

    def config(self) -> dict[str, Any]:
        """Every setting: config.json's value, else its default (SETTINGS). Checked on every load."""
        cfg = {s.name: s.default for s in SETTINGS}
        cfg.update(self.config_file_values())
        return cfg

    def update_config(self, **changes: Any) -> None:
        """Set settings in config.json (checked before writing; atomic, 0600)."""
        self._write_config({**self._read_json(self.config_file), **changes})

    def unset_config(self, *names: str) -> None:
        """Remove settings from config.json (back to their defaults); an unknown key may be removed too."""
        cur = self._read_json(self.config_file)
        self._write_config({k: v for k, v in cur.items() if k not in names})

    def _write_config(self, data: dict[str, Any]) -> None:
        from bridge.config import check_config

        check_config(data, str(self.config_file))
        write_private(self.config_file, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")

    def identity(self) -> dict[str, Any]:
        data = self._read_json(self.identity_file)
        if not data:
            raise HomeError(f"no Parley installation in {self.path}: run `parley init` first (or pass --home)")
        return data

    def rewrite_identity(self, *, address: str, did: str, record: bytes, wallet: str) -> dict[str, Any]:
        """Point identity.json at another wallet for the same installation (issue 4 part 3: sign in
        with the browser wallet). Keeps the installation fields, replaces address, did and record,
        remembers the previous address, and writes atomically (0600). Returns the new contents.

        Raises:
            HomeError: no identity.json to rewrite, or it cannot be read.
        """
        current = self.identity()
        updated = dict(current)
        updated.update(address=address, did=did, record=record.hex(), wallet=wallet)
        if current.get("address") != address:
            updated["previous_address"] = current.get("address")
        write_private(self.identity_file, json.dumps(updated, indent=2).encode() + b"\n")
        return updated

    def daemon_info(self) -> dict[str, Any] | None:
        data = self._read_json(self.daemon_file)
        return data or None
