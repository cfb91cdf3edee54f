"""Parley protocol 1, written from docs/PROTOCOL.md alone (no `bridge` import; see ../README.md).

Section numbers below are PROTOCOL.md's. Every function raises one of the error classes of §5.6
(plus WireError) on bad input, so the published vectors' negative cases can be checked by class name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import cbor2
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, padding
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

V = 1


# §5.6 errors -----------------------------------------------------------------------------------
class CryptoError(Exception):
    pass


class DecryptError(CryptoError):
    pass


class NoReceivingChain(DecryptError):
    pass


class InvalidSignature(CryptoError):
    pass


class SessionError(CryptoError):
    pass


class DuplicateMessage(CryptoError):
    pass


class TooManySkipped(CryptoError):
    pass


class WireError(Exception):
    pass


# §3 errors (Python names of §3 "Errors")
class IdentityError(Exception):
    pass


class InvalidStatement(IdentityError):
    pass


class BadSignature(IdentityError):
    pass


# §0 canonical CBOR -----------------------------------------------------------------------------
def enc(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def dec(data: bytes) -> Any:
    """Decode, and refuse anything that does not re-encode to the same bytes (§0)."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # noqa: BLE001 - cbor2 raises several types on malformed input
        raise WireError(f"not CBOR: {exc}") from None
    if enc(obj) != data:
        raise WireError("not canonical CBOR")
    return obj


def _is_uint(x: Any, limit: int = 2**32 - 1) -> bool:
    return type(x) is int and 0 <= x <= limit


def _bytes(x: Any, n: int | None = None) -> bool:
    return isinstance(x, bytes) and (n is None or len(x) == n)


# §2 identifiers --------------------------------------------------------------------------------
HEX32 = re.compile(r"[0-9a-f]{32}\Z")


def installation_id(ed_pub: bytes, x_pub: bytes) -> str:
    return hashlib.sha256(b"parley/v1/installation" + ed_pub + x_pub).digest()[:16].hex()


def inbox_topic(iid: str) -> str:
    return f"parley.v1.inbox.{iid}"


def address_bucket(address: str) -> str:
    return hashlib.sha256(address.encode("ascii")).hexdigest()


def new_message_id() -> str:
    return os.urandom(16).hex()


# primitives ------------------------------------------------------------------------------------
def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


def hmac256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def x25519_public(priv: bytes) -> bytes:
    if not _bytes(priv, 32):
        raise CryptoError("X25519 private key must be 32 bytes")
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()


def dh(priv: bytes, pub: bytes) -> bytes:
    """X25519; an all-zero output (low-order point) is refused (§5.1)."""
    if not (_bytes(priv, 32) and _bytes(pub, 32)):
        raise CryptoError("X25519 keys are 32 bytes")
    try:
        out = X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(pub))
    except ValueError:
        raise CryptoError("X25519 output is all zero") from None
    if out == bytes(32):
        raise CryptoError("X25519 output is all zero")
    return out


def ed_public(priv: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()


def ed_sign(priv: bytes, msg: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(priv).sign(msg)


def ed_verify(pub: bytes, sig: bytes, msg: bytes) -> None:
    if not (_bytes(pub, 32) and _bytes(sig, 64)):
        raise InvalidSignature("Ed25519 key 32 bytes, signature 64 bytes")
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    except (_CryptoInvalidSignature, ValueError):
        raise InvalidSignature("Ed25519 signature does not verify") from None


# §3 identity statements ------------------------------------------------------------------------
HEADLINE = {
    "authorize": "parley wants you to authorize an installation for your account:",
    "revoke": "parley wants you to revoke an installation for your account:",
}


def rfc3339(unix: int) -> str:
    return _dt.datetime.fromtimestamp(unix, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def statement_text(action: str, address: str, chain_id: int, iid: str, issued_at: int, nonce: bytes,
                   signing_pub: bytes | None = None, identity_pub: bytes | None = None) -> str:
    lines = [HEADLINE[action], address, "", "Domain: parley", f"Action: {action}-installation",
             f"Address: {address}", f"Chain ID: {chain_id}", f"Installation ID: {iid}"]
    if action == "authorize":
        assert signing_pub is not None and identity_pub is not None
        lines += [f"Signing Key: ed25519:{signing_pub.hex()}", f"Identity Key: x25519:{identity_pub.hex()}"]
    lines += [f"Issued At: {rfc3339(issued_at)}", f"Nonce: {nonce.hex()}"]
    return "\n".join(lines)


def eip191_hash(text: str) -> bytes:
    from eth_account.messages import _hash_eip191_message, encode_defunct

    return bytes(_hash_eip191_message(encode_defunct(text=text)))


def wallet_sign(wallet_key: bytes, text: str) -> bytes:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    return bytes(Account.sign_message(encode_defunct(text=text), private_key=wallet_key).signature)


def wallet_address(wallet_key: bytes) -> str:
    from eth_account import Account

    return str(Account.from_key(wallet_key).address)


def record(text: str, signature: bytes) -> bytes:
    return enc([V, "stmt", text, signature])


def record_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


MAX_RECORD, MAX_TEXT_CHARS, MIN_SIG, MAX_SIG = 8192, 1024, 65, 4096


def parse_record(data: bytes) -> tuple[str, bytes]:
    """§3 "Record encoding": [1, "stmt", text (0..1024), signature (65..4096)], canonical, at most 8192 bytes."""
    if not isinstance(data, bytes) or len(data) > MAX_RECORD:
        raise InvalidStatement("record larger than 8192 bytes")
    try:
        r = dec(data)
    except WireError as exc:
        raise InvalidStatement(f"malformed record: {exc}") from None
    if not (isinstance(r, list) and len(r) == 4):
        raise InvalidStatement("a record is an array of 4 items")
    if not (type(r[0]) is int and r[0] == V and r[1] == "stmt"):
        raise InvalidStatement('a record starts with 1, "stmt"')
    if not (isinstance(r[2], str) and isinstance(r[3], bytes)):
        raise InvalidStatement("a record holds a text and a signature byte string")
    if len(r[2]) > MAX_TEXT_CHARS:
        raise InvalidStatement("text longer than 1024 characters")
    if not MIN_SIG <= len(r[3]) <= MAX_SIG:
        raise InvalidStatement("signature not 65 to 4096 bytes")
    return r[2], r[3]


def statement_fields(text: str) -> dict[str, str]:
    """The `Key: value` lines of a statement (enough for a client that only reads its peers' keys)."""
    return dict(line.split(": ", 1) for line in text.split("\n")[3:])


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}\Z")
_CHAIN_ID = re.compile(r"[1-9][0-9]{0,18}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z\Z")


def checksum_address(address: str) -> str:
    """EIP-55 (keccak256 of the lowercase hex digits)."""
    from eth_utils import keccak

    low = address[2:].lower()
    digest = keccak(text=low).hex()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(low, digest))


def address_input(address: Any) -> str:
    """§3 "Users": an address input; all-lower or all-upper hex is checksummed, a mixed-case one must be
    checksummed already; 0X, no prefix, whitespace, non-ASCII digits are refused (IdentityError)."""
    if not (isinstance(address, str) and address.isascii() and _ADDRESS.match(address)):
        raise IdentityError("not an address: 0x and 40 hex digits")
    digits = address[2:]
    cs = checksum_address(address)
    if digits != digits.lower() and digits != digits.upper() and address != cs:
        raise IdentityError("mixed-case address with a wrong EIP-55 checksum")
    return cs


@dataclass(frozen=True)
class Statement:
    action: str
    address: str
    chain_id: int
    iid: str
    signing_pub: bytes | None
    identity_pub: bytes | None
    issued_at: int
    nonce: bytes


def parse_statement(text: Any) -> Statement:
    """§3 "Statement text": every rule, and the text must be byte for byte the canonical rendering of what
    it parsed to (InvalidStatement)."""
    if not (isinstance(text, str) and len(text) <= MAX_TEXT_CHARS):
        raise InvalidStatement("text is not a string of at most 1024 characters")
    if not text.isascii():
        raise InvalidStatement("text is not ASCII")
    if any(ord(c) < 0x20 and c != "\n" or ord(c) == 0x7F for c in text):
        raise InvalidStatement("control character in the text (only LF separates lines)")
    lines = text.split("\n")
    action = next((a for a, head in HEADLINE.items() if lines[0] == head), None)
    if action is None:
        raise InvalidStatement("unknown headline")
    names = ["Domain", "Action", "Address", "Chain ID", "Installation ID",
             *(["Signing Key", "Identity Key"] if action == "authorize" else []), "Issued At", "Nonce"]
    if len(lines) != 3 + len(names) or lines[2] != "":
        raise InvalidStatement(f"an {action} statement has {3 + len(names)} lines, the third empty")
    f: dict[str, str] = {}
    for name, line in zip(names, lines[3:]):
        if not line.startswith(name + ": "):
            raise InvalidStatement(f"expected the line '{name}: ...'")
        f[name] = line[len(name) + 2:]
    if f["Domain"] != "parley":
        raise InvalidStatement("Domain is not parley")
    if f["Action"] != f"{action}-installation":
        raise InvalidStatement("the Action line does not match the headline")
    address = f["Address"]
    if not _ADDRESS.match(address):
        raise InvalidStatement("address: 0x and 40 hex digits")
    if address != checksum_address(address):
        raise InvalidStatement("address not in EIP-55 checksummed form")
    if lines[1] != address:
        raise InvalidStatement("line 2 differs from the Address line")
    if not _CHAIN_ID.match(f["Chain ID"]) or int(f["Chain ID"]) > 2**63 - 1:
        raise InvalidStatement("Chain ID not in 1 .. 2^63-1 without leading zeros")
    iid = f["Installation ID"]
    if not HEX32.match(iid):
        raise InvalidStatement("Installation ID is not 32 lowercase hex digits")
    spub = ipub = None
    if action == "authorize":
        for name, prefix in (("Signing Key", "ed25519:"), ("Identity Key", "x25519:")):
            v = f[name]
            if not (v.startswith(prefix) and _HEX64.match(v[len(prefix):])):
                raise InvalidStatement(f"{name} is not {prefix}<64 lowercase hex>")
        spub, ipub = bytes.fromhex(f["Signing Key"][8:]), bytes.fromhex(f["Identity Key"][7:])
        if installation_id(spub, ipub) != iid:
            raise InvalidStatement("Installation ID is not the hash of the keys")
    m = _TIME.match(f["Issued At"])
    if not m:
        raise InvalidStatement("Issued At is not YYYY-MM-DDTHH:MM:SSZ")
    try:
        when = _dt.datetime(*map(int, m.groups()), tzinfo=_dt.timezone.utc)  # no second 60, no February 30
    except ValueError:
        raise InvalidStatement("Issued At is not a real date and time") from None
    issued_at = int(when.timestamp())
    if issued_at < 0:
        raise InvalidStatement("Issued At before 1970-01-01T00:00:00Z")
    if not HEX32.match(f["Nonce"]):
        raise InvalidStatement("Nonce is not 32 lowercase hex digits")
    st = Statement(action, address, int(f["Chain ID"]), iid, spub, ipub, issued_at, bytes.fromhex(f["Nonce"]))
    if statement_text(action, address, st.chain_id, iid, issued_at, st.nonce, spub, ipub) != text:
        raise InvalidStatement("text is not the canonical rendering of its fields")
    return st


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def eoa_verify(text: str, signature: bytes, address: str) -> None:
    """§3 "Signatures and verifiers", the EOA verifier: 65 bytes r‖s‖v, v in 27/28/0/1, r and s in [1, n-1]
    (high s accepted), the EIP-191 signer recovered must be `address` (BadSignature)."""
    from eth_keys import keys

    if len(signature) != 65:
        raise BadSignature("an EOA signature is 65 bytes")
    r, s, v = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]
    if v not in (27, 28, 0, 1):
        raise BadSignature("v must be 27 or 28 (or 0 or 1)")
    if not (1 <= r < SECP256K1_N and 1 <= s < SECP256K1_N):
        raise BadSignature("r or s out of range")
    try:
        pub = keys.Signature(vrs=(v % 27 if v >= 27 else v, r, s)).recover_public_key_from_msg_hash(eip191_hash(text))
    except Exception:  # noqa: BLE001 - eth_keys raises several types for an unrecoverable signature
        raise BadSignature("signature does not recover to a key") from None
    if pub.to_checksum_address() != address:
        raise BadSignature("not signed by the Address")


def verify_record_for(address: str, data: bytes) -> Statement:
    """§3: decode, parse, verify (EOA), and the statement's Address must be `address`."""
    want = address_input(address)
    text, sig = parse_record(data)
    st = parse_statement(text)
    eoa_verify(text, sig, st.address)
    if st.address != want:
        raise InvalidStatement("the statement is for another address")
    return st


def installations(address: str, records: list[bytes]) -> dict[str, tuple[Statement, str]]:
    """§3 "The active installation set": iid -> (kept authorization, its record_id)."""
    valid: list[tuple[Statement, str]] = []
    for r in records:
        try:
            st = verify_record_for(address, r)
        except IdentityError:
            continue
        valid.append((st, record_id(parse_record(r)[0])))
    revoked = {st.iid for st, _ in valid if st.action == "revoke"}
    active: dict[str, tuple[Statement, str]] = {}
    for st, rid in valid:
        if st.action != "authorize" or st.iid in revoked:
            continue
        kept = active.get(st.iid)
        if kept is None or (st.issued_at, _neg(rid)) > (kept[0].issued_at, _neg(kept[1])):
            active[st.iid] = (st, rid)
    return active


def _neg(rid: str) -> bytes:
    """Order key making the smaller record_id the larger (ties on Issued At: the smaller record_id wins)."""
    return bytes(255 - b for b in bytes.fromhex(rid))


# §4 prekeys ------------------------------------------------------------------------------------
SPK, OTPK, PQ_OTPK, PQ_LRPK = "x25519-spk", "x25519-otpk", "mlkem768-otpk", "mlkem768-lrpk"


MAX_PREKEYS_PER_UPLOAD = 200
_PUB_LEN = {SPK: 32, PQ_OTPK: 1184, PQ_LRPK: 1184}


def signed_prekey(signing_priv: bytes, kind: str, kid: int, pub: bytes) -> list[Any]:
    return [kind, kid, pub, ed_sign(signing_priv, prekey_signed_bytes(kind, kid, pub))]


def prekey_signed_bytes(kind: str, kid: int, pub: bytes) -> bytes:
    return enc([V, "prekey", kind, kid, pub])


def one_time_prekey(kid: int, pub: bytes) -> list[Any]:
    return [OTPK, kid, pub]


def parse_signed_prekey(pk: Any, kinds: tuple[str, ...]) -> tuple[str, int, bytes, bytes]:
    """Shape of a signed_prekey of one of `kinds` (§4: kind, id range, key length, 64-byte sig) -> WireError."""
    if not (isinstance(pk, list) and len(pk) == 4 and isinstance(pk[0], str) and pk[0] in kinds and _is_uint(pk[1])
            and _bytes(pk[2], _PUB_LEN[pk[0]]) and _bytes(pk[3], 64)):
        raise WireError(f"not a signed prekey of kind {'/'.join(kinds)}")
    return pk[0], pk[1], pk[2], pk[3]


def parse_one_time_prekey(o: Any) -> tuple[int, bytes]:
    if not (isinstance(o, list) and len(o) == 3 and o[0] == OTPK and isinstance(o[0], str) and _is_uint(o[1])
            and _bytes(o[2], 32)):
        raise WireError("not a one-time prekey")
    return o[1], o[2]


def verify_prekey(signing_pub: bytes, pk: Any, kinds: tuple[str, ...]) -> tuple[str, int, bytes]:
    kind, kid, pub, sig = parse_signed_prekey(pk, kinds)
    ed_verify(signing_pub, sig, prekey_signed_bytes(kind, kid, pub))
    return kind, kid, pub


def mlkem_public(seed: bytes) -> bytes:
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()


def prekey_body(iid: str, issued_at: int, spk: list[Any], otpks: list[list[Any]], pq_otpks: list[list[Any]],
                pq_lrpk: list[Any] | None) -> bytes:
    return enc([V, "prekeys", iid, issued_at, spk, otpks, pq_otpks, pq_lrpk])


def prekey_upload(signing_priv: bytes, iid: str, issued_at: int, spk: list[Any], otpks: list[list[Any]],
                  pq_otpks: list[list[Any]], pq_lrpk: list[Any] | None) -> bytes:
    body = prekey_body(iid, issued_at, spk, otpks, pq_otpks, pq_lrpk)
    return enc([V, body, ed_sign(signing_priv, body)])


@dataclass(frozen=True)
class Upload:
    iid: str
    issued_at: int
    spk: list[Any]
    otpks: list[list[Any]]
    pq_otpks: list[list[Any]]
    pq_lrpk: list[Any] | None
    body: bytes
    sig: bytes


def _prekey_list(x: Any) -> list[Any]:
    if not (isinstance(x, list) and len(x) <= MAX_PREKEYS_PER_UPLOAD):
        raise WireError(f"a prekey list holds at most {MAX_PREKEYS_PER_UPLOAD} keys")
    return x


def parse_upload(data: bytes) -> Upload:
    """§4: `[1, body, sig]` and the body inside, every rule of the layout (WireError); signatures unchecked."""
    u = dec(data)
    if not (isinstance(u, list) and len(u) == 3 and type(u[0]) is int and u[0] == V and _bytes(u[1]) and _bytes(u[2], 64)):
        raise WireError("not a prekey upload")
    b = dec(u[1])
    if not (isinstance(b, list) and len(b) == 8 and type(b[0]) is int and b[0] == V and b[1] == "prekeys"
            and isinstance(b[2], str) and HEX32.match(b[2]) and _is_uint(b[3], 2**63 - 1)):
        raise WireError("not a prekey upload body")
    parse_signed_prekey(b[4], (SPK,))
    for o in _prekey_list(b[5]):
        parse_one_time_prekey(o)
    for pk in _prekey_list(b[6]):
        parse_signed_prekey(pk, (PQ_OTPK,))
    if b[7] is not None:
        parse_signed_prekey(b[7], (PQ_LRPK,))
    return Upload(b[2], b[3], b[4], b[5], b[6], b[7], u[1], u[2])


def verify_upload(signing_pub: bytes, up: Upload) -> None:
    """The upload signature and every prekey signature (§4: one forged prekey refuses the whole upload)."""
    ed_verify(signing_pub, up.sig, up.body)
    for pk, kinds in [(up.spk, (SPK,)), *[(p, (PQ_OTPK,)) for p in up.pq_otpks],
                      *([(up.pq_lrpk, (PQ_LRPK,))] if up.pq_lrpk is not None else [])]:
        verify_prekey(signing_pub, pk, kinds)


def encode_bundle(iid: str, spk: list[Any], otpk: list[Any] | None, pqpk: list[Any]) -> bytes:
    return enc([V, "bundle", iid, spk, otpk, pqpk])


@dataclass(frozen=True)
class Bundle:
    iid: str
    spk_id: int
    spk: bytes
    otpk_id: int | None
    otpk: bytes | None
    pq_kind: str
    pq_id: int
    pq: bytes


def parse_bundle(data: bytes, iid: str, signing_pub: bytes) -> Bundle:
    """Decode and verify a claimed bundle against the signing key of the verified statement (§4, §5.2 step 1):
    layout -> WireError, another installation's -> SessionError, a signature -> InvalidSignature."""
    b = dec(data)
    if not (isinstance(b, list) and len(b) == 6 and type(b[0]) is int and b[0] == V and b[1] == "bundle"
            and isinstance(b[2], str) and HEX32.match(b[2])):
        raise WireError("not a bundle")
    parse_signed_prekey(b[3], (SPK,))
    otpk_id, otpk = parse_one_time_prekey(b[4]) if b[4] is not None else (None, None)
    parse_signed_prekey(b[5], (PQ_OTPK, PQ_LRPK))
    if b[2] != iid:
        raise SessionError("bundle for another installation")
    _, spk_id, spk = verify_prekey(signing_pub, b[3], (SPK,))
    pq_kind, pq_id, pq = verify_prekey(signing_pub, b[5], (PQ_OTPK, PQ_LRPK))
    return Bundle(b[2], spk_id, spk, otpk_id, otpk, pq_kind, pq_id, pq)


# Relay lists (protocol 1.1) ------------------------------------------------------------------
RELAY_LIST_TAG = "parley-relays"
MAX_RELAYS = 5
MAX_RELAY_URL = 200
MAX_RELAY_LIST_RECORD = 4096
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_DEC_OCTET = re.compile(r"(?:0|[1-9][0-9]{0,2})\Z")
_PORT = re.compile(r"[1-9][0-9]{0,4}\Z")
_SEGMENT = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-F]{2})+\Z")
_UNRESERVED_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _canonical_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        import ipaddress

        inner = host[1:-1]
        try:  # RFC 5952 section 4 text, hex only
            return "." not in inner and ipaddress.IPv6Address(inner).compressed == inner
        except ValueError:
            return False
    labels = host.split(".")
    if labels[-1].isdigit():  # then it must be a dotted quad
        return len(labels) == 4 and all(_DEC_OCTET.match(x) and int(x) <= 255 for x in labels)
    return len(host) <= 253 and all(_DNS_LABEL.match(x) for x in labels)


def is_canonical_relay_url(url: Any) -> bool:
    """scheme://host[:port][/path] in the one canonical form: https/http, lowercase host (DNS name, IPv4,
    [IPv6]), no userinfo/query/fragment, no default port, no trailing slash, <= 200 characters."""
    if not (isinstance(url, str) and url.isascii() and 0 < len(url) <= MAX_RELAY_URL):
        return False
    m = re.match(r"(https|http)://([^/?#@]+)(/[^?#]*)?\Z", url)
    if not m:
        return False
    scheme, authority, path = m.group(1), m.group(2), m.group(3) or ""
    port = None
    if authority.startswith("["):
        host, _, rest = authority.partition("]")
        host += "]"
        if rest:
            if not rest.startswith(":"):
                return False
            port = rest[1:]
    else:
        host, colon, port_text = authority.partition(":")
        port = port_text if colon else None
    if port is not None and not (_PORT.match(port) and int(port) <= 65535 and int(port) != {"https": 443, "http": 80}[scheme]):
        return False
    if not _canonical_host(host):
        return False
    for seg in path.split("/")[1:]:
        if seg in (".", "..") or not _SEGMENT.match(seg):
            return False  # also the empty segment of a trailing slash or '//'
        if any(chr(int(x, 16)) in _UNRESERVED_CHARS for x in re.findall(r"%([0-9A-F]{2})", seg)):
            return False  # an escaped unreserved character is not canonical
    return True


def relay_list_body(address: str, iid: str, version: int, issued_at: int, relays: list[str]) -> bytes:
    return enc([V, RELAY_LIST_TAG, address, iid, version, issued_at, relays])


def relay_list(signing_priv: bytes, address: str, iid: str, version: int, issued_at: int, relays: list[str]) -> bytes:
    body = relay_list_body(address, iid, version, issued_at, relays)
    return enc([V, body, ed_sign(signing_priv, body)])


@dataclass(frozen=True)
class RelayListRecord:
    address: str
    iid: str
    version: int
    issued_at: int
    relays: list[str]
    body: bytes
    sig: bytes


def parse_relay_list(data: bytes) -> RelayListRecord:
    """`[1, body, sig(64)]`, body `[1, "parley-relays", address, iid, version, issued_at, [1..5 URLs]]`: every layout
    rule (WireError); the signature is not checked here."""
    if not isinstance(data, bytes) or len(data) > MAX_RELAY_LIST_RECORD:
        raise WireError("a relay list is at most 4096 bytes")
    r = dec(data)
    if not (isinstance(r, list) and len(r) == 3 and type(r[0]) is int and r[0] == V and _bytes(r[1]) and _bytes(r[2], 64)):
        raise WireError("not a relay list")
    b = dec(r[1])
    if not (isinstance(b, list) and len(b) == 7 and type(b[0]) is int and b[0] == V and type(b[1]) is str and b[1] == RELAY_LIST_TAG):
        raise WireError("not a relay list body")
    _, _, address, iid, version, issued_at, relays = b
    if not (isinstance(address, str) and _ADDRESS.match(address) and checksum_address(address) == address):
        raise WireError("the address is not in EIP-55 form")
    if not (isinstance(iid, str) and HEX32.match(iid)):
        raise WireError("not an installation id")
    if not (_is_uint(version, 2**63 - 1) and version >= 1 and _is_uint(issued_at, 2**63 - 1)):
        raise WireError("version or issued_at out of range")
    if not (isinstance(relays, list) and 1 <= len(relays) <= MAX_RELAYS and all(is_canonical_relay_url(u) for u in relays)
            and len(set(relays)) == len(relays)):
        raise WireError("relays: 1 to 5 distinct canonical relay URLs")
    return RelayListRecord(address, iid, version, issued_at, relays, r[1], r[2])


def verify_relay_list(signing_pub: bytes, rl: RelayListRecord) -> None:
    ed_verify(signing_pub, rl.sig, rl.body)


# §7 authentication ----------------------------------------------------------------------------
def auth_input(iid: str, challenge: bytes) -> bytes:
    """CBOR [1, "parley-auth", installation_id (text), challenge (the raw 32 bytes)] (§7 Authentication)."""
    if not (isinstance(iid, str) and HEX32.match(iid) and _bytes(challenge, 32)):
        raise WireError("auth input: a 32-character id and a 32-byte challenge")
    return enc([V, "parley-auth", iid, challenge])


def auth_sign(signing_priv: bytes, iid: str, challenge: bytes) -> bytes:
    return ed_sign(signing_priv, auth_input(iid, challenge))


def auth_verify(signing_pub: bytes, iid: str, challenge: bytes, signature: bytes) -> None:
    ed_verify(signing_pub, signature, auth_input(iid, challenge))


# §5.3 double ratchet ---------------------------------------------------------------------------
MAX_SKIP, MAX_STORED_SKIPPED, MAX_OLD_DHR = 1000, 2000, 32


def kdf_rk(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    if not (_bytes(rk, 32) and _bytes(dh_out, 32)):
        raise CryptoError("KDF_RK takes 32-byte inputs")
    out = hkdf(rk, dh_out, b"Parley_Ratchet_v1", 64)
    return out[:32], out[32:]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """-> (next chain key, message key)."""
    if not _bytes(ck, 32):
        raise CryptoError("chain key must be 32 bytes")
    return hmac256(ck, b"\x02"), hmac256(ck, b"\x01")


def message_keys(mk: bytes) -> tuple[bytes, bytes, bytes]:
    if not _bytes(mk, 32):
        raise CryptoError("message key must be 32 bytes")
    out = hkdf(bytes(32), mk, b"Parley_MessageKeys_v1", 80)
    return out[:32], out[32:64], out[64:]


def pqxdh_sk(dhs: list[bytes], ss: bytes) -> bytes:
    if len(dhs) not in (3, 4) or not all(_bytes(d, 32) for d in dhs) or not _bytes(ss, 32):
        raise CryptoError("PQXDH takes 3 or 4 DH outputs and a 32-byte shared secret")
    return hkdf(bytes(32), b"\xff" * 32 + b"".join(dhs) + ss, b"Parley_PQXDH_CURVE25519_SHA-256_ML-KEM-768", 32)


def encode_header(dh_pub: bytes, pn: int, n: int) -> bytes:
    return enc([dh_pub, pn, n])


def decode_header(data: bytes) -> tuple[bytes, int, int]:
    h = dec(data)
    if not (isinstance(h, list) and len(h) == 3 and _bytes(h[0], 32) and _is_uint(h[1]) and _is_uint(h[2])):
        raise WireError("malformed ratchet header")
    return h[0], h[1], h[2]


def encrypt(mk: bytes, plaintext: bytes, ad: bytes) -> bytes:
    ek, ak, iv = message_keys(mk)
    padder = padding.PKCS7(128).padder()
    e = Cipher(algorithms.AES(ek), modes.CBC(iv)).encryptor()
    c = e.update(padder.update(plaintext) + padder.finalize()) + e.finalize()
    return c + hmac256(ak, ad + c)


def decrypt(mk: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    ek, ak, iv = message_keys(mk)
    c, tag = ciphertext[:-32], ciphertext[-32:]
    if len(ciphertext) < 48 or len(c) % 16:
        raise DecryptError("ciphertext length")
    if not hmac.compare_digest(hmac256(ak, ad + c), tag):
        raise DecryptError("bad tag")
    d = Cipher(algorithms.AES(ek), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(d.update(c) + d.finalize()) + unpadder.finalize()
    except ValueError:
        raise DecryptError("bad padding") from None


KeyGen = Callable[[], bytes]


def random_x25519() -> bytes:
    return X25519PrivateKey.generate().private_bytes_raw()


@dataclass(frozen=True)
class Ratchet:
    """§5.3 state; immutable, every operation returns a new one (§5.3.4, last paragraph)."""

    dhs_priv: bytes
    dhs_pub: bytes
    dhr: bytes | None
    rk: bytes
    cks: bytes | None
    ckr: bytes | None
    ns: int = 0
    nr: int = 0
    pn: int = 0
    skipped: tuple[tuple[bytes, int, bytes], ...] = ()
    old_dhr: tuple[bytes, ...] = ()

    @staticmethod
    def alice(sk: bytes, spk_b: bytes, keygen: KeyGen = random_x25519) -> Ratchet:
        priv = keygen()
        rk, cks = kdf_rk(sk, dh(priv, spk_b))
        return Ratchet(priv, x25519_public(priv), spk_b, rk, cks, None)

    @staticmethod
    def bob(sk: bytes, spk_priv: bytes) -> Ratchet:
        return Ratchet(spk_priv, x25519_public(spk_priv), None, sk, None, None)

    def to_list(self) -> list[Any]:
        return [V, "ratchet", self.dhs_priv, self.dhs_pub, self.dhr, self.rk, self.cks, self.ckr, self.ns, self.nr,
                self.pn, [list(s) for s in self.skipped], list(self.old_dhr)]

    @staticmethod
    def from_list(r: list[Any]) -> Ratchet:
        if not (isinstance(r, list) and len(r) == 13 and r[:2] == [V, "ratchet"]):
            raise SessionError("malformed ratchet state")
        return Ratchet(r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], tuple(tuple(s) for s in r[11]), tuple(r[12]))

    def encrypt(self, plaintext: bytes, ad: bytes) -> tuple[Ratchet, bytes, bytes]:
        if self.cks is None:
            raise SessionError("no sending chain yet")
        cks, mk = kdf_ck(self.cks)
        header = encode_header(self.dhs_pub, self.pn, self.ns)
        return replace(self, cks=cks, ns=self.ns + 1), header, encrypt(mk, plaintext, ad + header)

    def _skip(self, until: int) -> Ratchet:
        """Store the keys of the current receiving chain from Nr up to until-1 (the MAX_SKIP check is the caller's)."""
        if self.ckr is None:
            return self
        ck, nr, skipped = self.ckr, self.nr, list(self.skipped)
        while nr < until:
            ck, mk = kdf_ck(ck)
            skipped.append((self.dhr, nr, mk))  # type: ignore[arg-type]
            nr += 1
        return replace(self, ckr=ck, nr=nr, skipped=tuple(skipped))

    def decrypt(self, header: bytes, ciphertext: bytes, ad: bytes, keygen: KeyGen = random_x25519) -> tuple[Ratchet, bytes]:
        """§5.3.4 steps 0-5 in order; the returned state is new, `self` is never changed (any failure keeps it)."""
        try:  # 0
            hdh, pn, n = decode_header(header)
        except WireError as exc:
            raise SessionError(f"malformed inner header: {exc}") from None
        for i, (sdh, sn, mk) in enumerate(self.skipped):  # 1
            if sdh == hdh and sn == n:
                pt = decrypt(mk, ciphertext, ad + header)
                return replace(self, skipped=self.skipped[:i] + self.skipped[i + 1:]), pt
        if hdh == self.dhr and n < self.nr:  # 2
            raise DuplicateMessage("message key already used")
        if hdh in self.old_dhr:
            raise DuplicateMessage("a chain this state finished")
        st = self
        if hdh != st.dhr:  # 3
            if pn > st.nr + MAX_SKIP:  # (a), even without a receiving chain
                raise TooManySkipped("too many skipped messages in the previous chain")
            st = st._skip(pn)  # (b)
            old = st.old_dhr + ((st.dhr,) if st.dhr is not None else ())  # (c)
            rk, ckr = kdf_rk(st.rk, dh(st.dhs_priv, hdh))
            priv = keygen()
            rk, cks = kdf_rk(rk, dh(priv, hdh))
            st = replace(st, pn=st.ns, ns=0, nr=0, dhr=hdh, rk=rk, ckr=ckr, cks=cks, dhs_priv=priv,
                         dhs_pub=x25519_public(priv), old_dhr=old[-MAX_OLD_DHR:])
        if n > st.nr + MAX_SKIP:  # 4
            raise TooManySkipped("too many skipped messages")
        if st.ckr is None:
            raise NoReceivingChain("no receiving chain")
        st = st._skip(n)
        ckr, mk = kdf_ck(st.ckr)  # type: ignore[arg-type]
        pt = decrypt(mk, ciphertext, ad + header)
        return replace(st, ckr=ckr, nr=st.nr + 1, skipped=st.skipped[-MAX_STORED_SKIPPED:]), pt  # 5


# §5.2 PQXDH and §5.4 session messages ---------------------------------------------------------
@dataclass(frozen=True)
class Installation:
    """Our own installation keys (plus its wallet)."""

    signing_priv: bytes
    identity_priv: bytes

    @staticmethod
    def generate() -> Installation:
        return Installation(Ed25519PrivateKey.generate().private_bytes_raw(), random_x25519())

    @property
    def signing_pub(self) -> bytes:
        return ed_public(self.signing_priv)

    @property
    def identity_pub(self) -> bytes:
        return x25519_public(self.identity_priv)

    @property
    def iid(self) -> str:
        return installation_id(self.signing_pub, self.identity_pub)


@dataclass(frozen=True)
class Peer:
    """An installation's public keys, from its verified statement."""

    iid: str
    signing_pub: bytes
    identity_pub: bytes

    def check(self) -> None:
        if installation_id(self.signing_pub, self.identity_pub) != self.iid:
            raise SessionError("installation id does not match its keys")


def pqxdh_ad(ik_a: bytes, ik_b: bytes, iid_a: str, iid_b: str) -> bytes:
    return b"parley/v1" + ik_a + ik_b + iid_a.encode() + iid_b.encode()


def pqxdh_sid(ad: bytes, ek_a: bytes, ct: bytes, spk_id: int, otpk_id: int | None, pq_kind: str, pq_id: int) -> bytes:
    return hashlib.sha256(ad + ek_a + ct + enc([spk_id, otpk_id, pq_kind, pq_id])).digest()[:16]


@dataclass(frozen=True)
class Session:
    remote_iid: str
    sid: bytes
    ad: bytes
    initiator: bool
    reply_received: bool
    pending: tuple[Any, ...] | None  # (ik_A, ek_A, spk_id, otpk_id, pqpk_kind, pqpk_id, kem_ct)
    ratchet: Ratchet

    def to_bytes(self) -> bytes:
        return enc([V, "session", self.remote_iid, self.sid, self.ad, self.initiator, self.reply_received,
                    list(self.pending) if self.pending is not None else None, self.ratchet.to_list()])

    @staticmethod
    def from_bytes(data: bytes) -> Session:
        s = dec(data)
        if not (isinstance(s, list) and len(s) == 9 and s[:2] == [V, "session"]):
            raise SessionError("malformed session")
        return Session(s[2], s[3], s[4], s[5], s[6], tuple(s[7]) if s[7] is not None else None, Ratchet.from_list(s[8]))

    def encrypt(self, plaintext: bytes) -> tuple[Session, bytes]:
        r, header, ct = self.ratchet.encrypt(plaintext, self.ad)
        s = replace(self, ratchet=r)
        if self.initiator and not self.reply_received and self.pending is not None:
            return s, enc([V, "prekey", self.sid, *self.pending, header, ct])
        return s, enc([V, "msg", self.sid, header, ct])

    def decrypt(self, message: bytes, keygen: KeyGen = random_x25519) -> tuple[Session, bytes]:
        m = parse_message(message)
        if m["sid"] != self.sid:
            raise SessionError("message for another session")
        if m["type"] == "prekey":
            if self.initiator:
                raise SessionError("an initiator does not accept PreKey messages")
            if m["ik_a"] != self.ad[9:41]:
                raise SessionError("PreKey fields differ from the session's")
            if pqxdh_sid(self.ad, m["ek_a"], m["ct"], m["spk_id"], m["otpk_id"], m["pq_kind"], m["pq_id"]) != self.sid:
                raise SessionError("PreKey fields differ from the session's")
        r, pt = self.ratchet.decrypt(m["header"], m["ciphertext"], self.ad, keygen)
        return replace(self, ratchet=r, reply_received=True, pending=None if self.initiator else self.pending), pt


def parse_message(data: bytes) -> dict[str, Any]:
    if len(data) > (1 << 20) + 4096:
        raise SessionError("message too large")
    try:
        m = dec(data)
    except WireError as exc:
        raise SessionError(str(exc)) from None
    if isinstance(m, list) and len(m) == 12 and m[:2] == [V, "prekey"]:
        _, _, sid, ik_a, ek_a, spk_id, otpk_id, pq_kind, pq_id, ct, header, c = m
        ok = (_bytes(sid, 16) and _bytes(ik_a, 32) and _bytes(ek_a, 32) and _is_uint(spk_id)
              and (otpk_id is None or _is_uint(otpk_id)) and pq_kind in (PQ_OTPK, PQ_LRPK) and _is_uint(pq_id)
              and _bytes(ct, 1088) and _bytes(header) and _bytes(c))
        if not ok:
            raise SessionError("malformed PreKey message")
        return dict(type="prekey", sid=sid, ik_a=ik_a, ek_a=ek_a, spk_id=spk_id, otpk_id=otpk_id, pq_kind=pq_kind,
                    pq_id=pq_id, ct=ct, header=header, ciphertext=c)
    if isinstance(m, list) and len(m) == 5 and m[:2] == [V, "msg"] and _bytes(m[2], 16) and _bytes(m[3]) and _bytes(m[4]):
        return dict(type="msg", sid=m[2], header=m[3], ciphertext=m[4])
    raise SessionError("not a session message")


def initiate(me: Installation, peer: Peer, bundle: Bundle, keygen: KeyGen = random_x25519) -> Session:
    """Alice's side of §5.2 (bundle already verified by parse_bundle)."""
    peer.check()
    if bundle.iid != peer.iid:
        raise SessionError("bundle for another installation")
    ek = keygen()
    dhs = [dh(me.identity_priv, bundle.spk), dh(ek, peer.identity_pub), dh(ek, bundle.spk)]
    if bundle.otpk is not None:
        dhs.append(dh(ek, bundle.otpk))
    ss, ct = mlkem.MLKEM768PublicKey.from_public_bytes(bundle.pq).encapsulate()
    sk = pqxdh_sk(dhs, ss)
    ad = pqxdh_ad(me.identity_pub, peer.identity_pub, me.iid, peer.iid)
    ek_pub = x25519_public(ek)
    sid = pqxdh_sid(ad, ek_pub, ct, bundle.spk_id, bundle.otpk_id, bundle.pq_kind, bundle.pq_id)
    pending = (me.identity_pub, ek_pub, bundle.spk_id, bundle.otpk_id, bundle.pq_kind, bundle.pq_id, ct)
    return Session(peer.iid, sid, ad, True, False, pending, Ratchet.alice(sk, bundle.spk, keygen))


@dataclass
class PrivatePrekeys:
    """Bob's private prekeys, by id (what a responder holds)."""

    spk: dict[int, bytes] = field(default_factory=dict)
    otpk: dict[int, bytes] = field(default_factory=dict)
    pq: dict[tuple[str, int], bytes] = field(default_factory=dict)  # ML-KEM seeds


def respond(me: Installation, sender: Peer, message: bytes, keys: PrivatePrekeys,
            keygen: KeyGen = random_x25519) -> tuple[Session, bytes, bytes]:
    """Bob's side of §5.2: -> (session, plaintext, sk)."""
    m = parse_message(message)
    if m["type"] != "prekey":
        raise SessionError("not a PreKey message")
    sender.check()
    if m["ik_a"] != sender.identity_pub:
        raise SessionError("identity key is not the sender's")
    spk = keys.spk.get(m["spk_id"])
    seed = keys.pq.get((m["pq_kind"], m["pq_id"]))
    if spk is None or seed is None:
        raise SessionError("unknown prekey")
    if (m["otpk_id"] is None) != (m["otpk_id"] not in keys.otpk):
        raise SessionError("one-time prekey missing")
    dhs = [dh(spk, m["ik_a"]), dh(me.identity_priv, m["ek_a"]), dh(spk, m["ek_a"])]
    if m["otpk_id"] is not None:
        dhs.append(dh(keys.otpk[m["otpk_id"]], m["ek_a"]))
    try:
        ss = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).decapsulate(m["ct"])
    except ValueError:
        raise SessionError("bad KEM ciphertext") from None
    sk = pqxdh_sk(dhs, ss)
    ad = pqxdh_ad(m["ik_a"], me.identity_pub, sender.iid, me.iid)
    if pqxdh_sid(ad, m["ek_a"], m["ct"], m["spk_id"], m["otpk_id"], m["pq_kind"], m["pq_id"]) != m["sid"]:
        raise SessionError("sid does not match")
    r, pt = Ratchet.bob(sk, spk).decrypt(m["header"], m["ciphertext"], ad, keygen)
    return Session(sender.iid, m["sid"], ad, False, True, None, r), pt, sk


# §5.5 sealed sender ----------------------------------------------------------------------------
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _sealed_info(iid: str) -> bytes:
    return b"parley/v1/sealed-sender/" + iid.encode()


def seal(recipient_identity_pub: bytes, recipient_iid: str, sender_iid: str, sender_record: bytes, message: bytes) -> bytes:
    inner = enc([V, "sealed", sender_iid, sender_record, message])
    ct = _SUITE.encrypt(inner, X25519PublicKey.from_public_bytes(recipient_identity_pub), _sealed_info(recipient_iid))
    return enc([V, ct])


def seal_raw(recipient_identity_pub: bytes, recipient_iid: str, inner: bytes) -> bytes:
    """Seal arbitrary inner bytes (for malformed-input tests)."""
    ct = _SUITE.encrypt(inner, X25519PublicKey.from_public_bytes(recipient_identity_pub), _sealed_info(recipient_iid))
    return enc([V, ct])


def unseal(identity_priv: bytes, own_iid: str, payload: bytes) -> tuple[str, bytes, bytes]:
    outer = dec(payload)
    if not (isinstance(outer, list) and len(outer) == 2 and type(outer[0]) is int and outer[0] == V and _bytes(outer[1])):
        raise WireError("not a sealed payload")
    try:
        inner = _SUITE.decrypt(outer[1], X25519PrivateKey.from_private_bytes(identity_priv), _sealed_info(own_iid))
    except (InvalidTag, ValueError):
        raise DecryptError("sealed sender does not open") from None
    i = dec(inner)
    if not (isinstance(i, list) and len(i) == 5 and i[:2] == [V, "sealed"] and isinstance(i[2], str) and _bytes(i[3]) and _bytes(i[4])):
        raise WireError("malformed sealed inner")
    return i[2], i[3], i[4]


# §6.1 content and padding ----------------------------------------------------------------------
def content(message_id: str, sender: str, recipient: str, sent_at: int, text: str) -> bytes:
    return enc([V, "text", message_id, sender, recipient, sent_at, text])


def pad(data: bytes) -> bytes:
    size = 512
    while size < len(data) + 1:
        size *= 2
    return data + b"\x80" + bytes(size - len(data) - 1)


def unpad(data: bytes) -> bytes:
    n = len(data)
    if n < 512 or n & (n - 1):
        raise WireError("padded length is not a power of two >= 512")
    body = data.rstrip(b"\x00")
    if not body or body[-1] != 0x80:
        raise WireError("no 0x80 padding marker")
    if len(pad(body[:-1])) != n:
        raise WireError("padding larger than the minimal bucket")
    return body[:-1]


CONTENT_TYPE = re.compile(r"[a-z]+(?:[.-][a-z]+)*\Z")  # "lowercase ASCII words joined by . or -" (§6.1)
MAX_TEXT = 65536


def _content_address(x: Any) -> bool:
    """§6.1: the content decoder checks only the shape of an address: "0x" and 42 characters."""
    return isinstance(x, str) and len(x) == 42 and x.startswith("0x")


def parse_content(padded: bytes) -> dict[str, Any]:
    """§6.1 decode rules (plus §10.2: a later type, or trailing extra items, are not refused)."""
    c = dec(unpad(padded))
    if not (isinstance(c, list) and len(c) >= 7):
        raise WireError("content is not an array of at least 7 items")
    v, kind, mid, sender, recipient, sent_at, text = c[:7]
    if not (type(v) is int and v == V):
        raise WireError("content version is not 1")
    if not (isinstance(kind, str) and len(kind) <= 64 and CONTENT_TYPE.match(kind)):
        raise WireError("bad content type")
    if not (isinstance(mid, str) and HEX32.match(mid)):
        raise WireError("message_id is not 32 lowercase hex digits")
    if not (_content_address(sender) and _content_address(recipient)):
        raise WireError("sender/recipient is not a 0x address of 42 characters")
    if not _is_uint(sent_at, 2**63 - 1):
        raise WireError("sent_at is not a uint up to 2^63-1")
    if not (isinstance(text, str) and len(text.encode()) <= MAX_TEXT):
        raise WireError("text is not UTF-8 text of at most 64 KiB")
    return dict(type=kind, message_id=mid, sender=sender, recipient=recipient, sent_at=sent_at, text=text, extra=c[7:])


# §8.1 local API: the bridge's proof and the pairing proofs (gate 4) -------------------------------
def bridge_proof_message(origin: str, host: str, challenge: bytes) -> bytes:
    return b"parley local-api v1 bridge proof" + b"\x00" + origin.encode() + b"\x00" + host.encode() + b"\x00" + challenge


def normalise_code(code: str) -> str:
    """§8.1: a pairing code normalised: upper case, no spaces or dashes."""
    return code.upper().replace(" ", "").replace("-", "")


def pair_proof(code: str, side: str, challenge: bytes, key: bytes) -> bytes:
    """HMAC-SHA256(SHA-256(code), "parley local-api v1 pairing" ‖ 0x00 ‖ side ‖ 0x00 ‖ challenge ‖ key)."""
    if side not in ("client", "bridge"):
        raise ValueError("side is 'client' or 'bridge'")
    k = hashlib.sha256(normalise_code(code).encode()).digest()
    return hmac256(k, b"parley local-api v1 pairing" + b"\x00" + side.encode() + b"\x00" + challenge + key)
