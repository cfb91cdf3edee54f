"""The MLS key schedule and the secret tree (RFC 9420 §8, §9).

* The epoch's :class:`bridge.mls.messages.GroupContext` (§8.1) binds every secret (encoded, or the object).
* :func:`next_epoch` / :func:`from_joiner` - one step of the key schedule (§8): init_secret and
  commit_secret give the joiner_secret; with the psk_secret it gives the welcome_secret and the
  epoch_secret, from which every secret of :class:`EpochSecrets` is derived (table in §8).
* :func:`exporter` - MLS-Exporter (§8.5); :func:`external_pub` - the external init key pair
  (§8.3). External joins themselves (HPKE's secret export, which ``cryptography`` does not expose)
  are not built: Parley's groups add members by Welcome.
* :func:`psk_secret` - pre-shared keys (§8.4), over :class:`bridge.mls.messages.PreSharedKeyID`.
* :class:`SecretTree` - per-sender handshake and application hash ratchets (§9, §9.1), deleting
  each secret once used; :func:`sender_data_key_nonce` - the sender-data key and nonce (§6.3.2);
  :func:`welcome_key_nonce` - the Welcome's GroupInfo key and nonce (§12.4.3.1).
* ``check_key_schedule``, ``check_psk_secret``, ``check_secret_tree`` - the working group's vector
  checks (tests/vectors/mls/test-vectors.md).

Secrets are ``bytes`` and never appear in a ``repr``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from bridge.mls import treemath as tm
from bridge.mls.checks import expect
from bridge.mls.errors import MLSError
from bridge.mls.messages import GroupContext, PreSharedKeyID
from bridge.mls.suite import CipherSuite, suite
from bridge.mls.tls import Writer

__all__ = [
    "EpochSecrets",
    "joiner_secret",
    "welcome_secret",
    "welcome_key_nonce",
    "next_epoch",
    "from_joiner",
    "exporter",
    "external_key_pair",
    "external_pub",
    "psk_secret",
    "HANDSHAKE",
    "APPLICATION",
    "MAX_GENERATION_SKIP",
    "SecretTree",
    "sender_data_key_nonce",
    "check_key_schedule",
    "check_psk_secret",
    "check_secret_tree",
]

GroupContextLike = GroupContext | bytes


def _gc_bytes(group_context: GroupContextLike) -> bytes:
    return group_context.encode() if isinstance(group_context, GroupContext) else bytes(group_context)


# --- the key schedule (§8) ------------------------------------------------------------


@dataclass(frozen=True)
class EpochSecrets:
    """Every secret of one epoch (§8). ``init_secret`` is the next epoch's init_secret."""

    joiner_secret: bytes = field(repr=False)
    welcome_secret: bytes = field(repr=False)
    epoch_secret: bytes = field(repr=False)
    sender_data_secret: bytes = field(repr=False)
    encryption_secret: bytes = field(repr=False)
    exporter_secret: bytes = field(repr=False)
    external_secret: bytes = field(repr=False)
    confirmation_key: bytes = field(repr=False)
    membership_key: bytes = field(repr=False)
    resumption_psk: bytes = field(repr=False)
    epoch_authenticator: bytes = field(repr=False)
    init_secret: bytes = field(repr=False)


_DERIVED = (
    ("sender_data_secret", "sender data"),
    ("encryption_secret", "encryption"),
    ("exporter_secret", "exporter"),
    ("external_secret", "external"),
    ("confirmation_key", "confirm"),
    ("membership_key", "membership"),
    ("resumption_psk", "resumption"),
    ("epoch_authenticator", "authentication"),
    ("init_secret", "init"),
)


def _or_zero(cs: CipherSuite, secret: bytes | None) -> bytes:
    return bytes(secret) if secret else bytes(cs.nh)


def joiner_secret(cs: CipherSuite, init_secret: bytes, commit_secret: bytes | None, group_context: GroupContextLike) -> bytes:
    """``ExpandWithLabel(Extract(init_secret, commit_secret), "joiner", GroupContext, Nh)``; a missing
    commit_secret is Nh zero bytes."""
    prk = cs.extract(bytes(init_secret), _or_zero(cs, commit_secret))
    return cs.expand_with_label(prk, "joiner", _gc_bytes(group_context), cs.nh)


def _psk_extracted(cs: CipherSuite, joiner: bytes, psk: bytes | None) -> bytes:
    return cs.extract(bytes(joiner), _or_zero(cs, psk))


def welcome_secret(cs: CipherSuite, joiner_secret: bytes, psk_secret: bytes | None = None) -> bytes:
    """``DeriveSecret(Extract(joiner_secret, psk_secret), "welcome")``: what a Welcome's joiner needs
    before it has the GroupContext."""
    return cs.derive_secret(_psk_extracted(cs, joiner_secret, psk_secret), "welcome")


def welcome_key_nonce(cs: CipherSuite, welcome_secret: bytes) -> tuple[bytes, bytes]:
    """The AEAD key and nonce of a Welcome's encrypted GroupInfo (§12.4.3.1)."""
    return (cs.expand_with_label(welcome_secret, "key", b"", cs.nk),
            cs.expand_with_label(welcome_secret, "nonce", b"", cs.nn))


def from_joiner(cs: CipherSuite, joiner_secret: bytes, psk_secret: bytes | None, group_context: GroupContextLike) -> EpochSecrets:
    """The epoch's secrets from its joiner_secret (a Welcome's joiner starts here); a missing
    psk_secret is Nh zero bytes."""
    extracted = _psk_extracted(cs, joiner_secret, psk_secret)
    epoch_secret = cs.expand_with_label(extracted, "epoch", _gc_bytes(group_context), cs.nh)
    derived = {name: cs.derive_secret(epoch_secret, label) for name, label in _DERIVED}
    return EpochSecrets(
        joiner_secret=bytes(joiner_secret),
        welcome_secret=cs.derive_secret(extracted, "welcome"),
        epoch_secret=epoch_secret,
        **derived,
    )


def next_epoch(cs: CipherSuite, init_secret: bytes, commit_secret: bytes | None, psk_secret: bytes | None,
               group_context: GroupContextLike) -> EpochSecrets:
    """One step of the key schedule (§8): the new epoch's secrets from the previous epoch's
    init_secret (random at group creation), the commit_secret and the psk_secret (Nh zero bytes
    when absent), bound to the new epoch's GroupContext (encoded, or a :class:`GroupContext`)."""
    gc = _gc_bytes(group_context)
    return from_joiner(cs, joiner_secret(cs, init_secret, commit_secret, gc), psk_secret, gc)


def exporter(cs: CipherSuite, exporter_secret: bytes, label: str | bytes, context: bytes, length: int) -> bytes:
    """MLS-Exporter (§8.5): ``ExpandWithLabel(DeriveSecret(exporter_secret, label), "exported",
    Hash(context), length)``."""
    return cs.expand_with_label(cs.derive_secret(exporter_secret, label), "exported", cs.hash(context), length)


# --- external init (§8.3) -----------------------------------------------------------------

def external_key_pair(cs: CipherSuite, external_secret: bytes) -> tuple[bytes, bytes]:
    """``KEM.DeriveKeyPair(external_secret)`` (§8.3): (private, public)."""
    return cs.derive_key_pair(external_secret)


def external_pub(cs: CipherSuite, external_secret: bytes) -> bytes:
    """The epoch's external public key, published in the ``external_pub`` extension (§8.3)."""
    return cs.derive_key_pair(external_secret)[1]


# --- pre-shared keys (§8.4) --------------------------------------------------------------

def psk_secret(cs: CipherSuite, psks: Sequence[tuple[PreSharedKeyID | bytes, bytes]]) -> bytes:
    """The psk_secret of §8.4 from (PreSharedKeyID, psk) pairs in the order of the Commit's PSK
    proposals (a PreSharedKeyID may be given encoded); Nh zero bytes when there are none."""
    count = len(psks)
    secret = bytes(cs.nh)
    for index, (psk_id, psk) in enumerate(psks):
        id_bytes = psk_id.encode() if isinstance(psk_id, PreSharedKeyID) else bytes(psk_id)
        label = Writer().raw(id_bytes).u16(index).u16(count).bytes()
        psk_input = cs.expand_with_label(cs.extract(b"", bytes(psk)), "derived psk", label, cs.nh)
        secret = cs.extract(psk_input, secret)
    return secret


# --- the secret tree (§9) -----------------------------------------------------------------

HANDSHAKE = "handshake"
APPLICATION = "application"

#: The furthest a ratchet moves forward for one message, and the most skipped generations' keys
#: each ratchet keeps for out-of-order messages (§9.4 leaves the bound to the application).
MAX_GENERATION_SKIP = 1000

_MAX_GENERATION = (1 << 32) - 1


class _HashRatchet:
    """One sender's handshake or application ratchet (§9.1). Holds the secret of the next
    generation and the keys of skipped generations; every key is handed out at most once."""

    __slots__ = ("_cs", "_secret", "_generation", "_skipped", "_max_skip")

    def __init__(self, cs: CipherSuite, secret: bytes, max_skip: int) -> None:
        self._cs = cs
        self._secret: bytes | None = secret
        self._generation = 0
        self._skipped: dict[int, tuple[bytes, bytes]] = {}
        self._max_skip = max_skip

    @property
    def generation(self) -> int:
        return self._generation

    def _step(self) -> tuple[bytes, bytes]:
        if self._secret is None:
            raise MLSError("the ratchet has run out of generations")
        cs, g, s = self._cs, self._generation, self._secret
        out = cs.derive_tree_secret(s, "key", g, cs.nk), cs.derive_tree_secret(s, "nonce", g, cs.nn)
        if g == _MAX_GENERATION:
            self._secret = None
        else:
            self._secret = cs.derive_tree_secret(s, "secret", g, cs.nh)
        self._generation = g + 1
        return out

    def get(self, generation: int) -> tuple[bytes, bytes]:
        key_nonce = self.peek(generation)
        del self._skipped[generation]
        return key_nonce

    def peek(self, generation: int) -> tuple[bytes, bytes]:
        """The key and nonce of ``generation`` without using them up: the ratchet moves forward to it
        (keeping the keys it passes, ``generation``'s included) but nothing is deleted until
        :meth:`get`. A message that then fails to decrypt costs the real one nothing."""
        if not 0 <= generation <= _MAX_GENERATION:
            raise MLSError(f"generation {generation} is not a uint32")
        if generation < self._generation:
            hit = self._skipped.get(generation)
            if hit is None:
                raise MLSError(f"generation {generation} was already used or has been deleted")
            return hit
        if generation - self._generation > self._max_skip:
            raise MLSError(f"generation {generation} is more than {self._max_skip} ahead of {self._generation}")
        while self._generation <= generation:
            g = self._generation
            self._skipped[g] = self._step()
        if len(self._skipped) > self._max_skip + 1:
            for g in sorted(self._skipped)[: len(self._skipped) - self._max_skip - 1]:
                if g != generation:
                    del self._skipped[g]
        return self._skipped[generation]

    def next(self) -> tuple[int, bytes, bytes]:
        g = self._generation
        key, nonce = self._step()
        return g, key, nonce

    def state(self) -> list[Any]:
        """Plain values for storage (encrypted at rest by the caller): what is left of the ratchet."""
        return [self._secret, self._generation, [[g, k, n] for g, (k, n) in sorted(self._skipped.items())]]

    @classmethod
    def from_state(cls, cs: CipherSuite, state: Any, max_skip: int) -> _HashRatchet:
        try:
            secret, generation, skipped = state
            r = cls(cs, b"", max_skip)
            if secret is not None and not (isinstance(secret, bytes) and len(secret) == cs.nh):
                raise TypeError("secret")
            if not isinstance(generation, int) or not 0 <= generation <= _MAX_GENERATION + 1:
                raise TypeError("generation")
            r._secret, r._generation = secret, generation
            for g, k, n in skipped:
                if not (isinstance(g, int) and 0 <= g < generation and isinstance(k, bytes) and isinstance(n, bytes)):
                    raise TypeError("skipped key")
                r._skipped[g] = (k, n)
        except (TypeError, ValueError) as exc:
            raise MLSError(f"a stored hash ratchet is malformed: {exc}") from None
        return r


class SecretTree:
    """The secret tree of one epoch (§9): ``encryption_secret`` at the root of a tree of
    ``n_leaves`` leaves, ``ExpandWithLabel(secret, "tree", "left"/"right", Nh)`` down to each leaf,
    whose secret seeds its handshake and application ratchets. Node secrets are derived on first use
    and deleted once their children are; a ratchet's keys are handed out once each."""

    def __init__(self, cs: CipherSuite, encryption_secret: bytes, n_leaves: int, *,
                 max_skip: int = MAX_GENERATION_SKIP) -> None:
        if n_leaves < 1:
            raise MLSError("a secret tree has at least one leaf")
        self._cs = cs
        self._n_leaves = n_leaves
        self._max_skip = max_skip
        self._nodes: dict[int, bytes] = {tm.root(n_leaves): bytes(encryption_secret)}
        self._ratchets: dict[tuple[int, str], _HashRatchet] = {}

    def __repr__(self) -> str:
        return f"SecretTree(suite=0x{self._cs.id:04x}, n_leaves={self._n_leaves})"

    @property
    def n_leaves(self) -> int:
        return self._n_leaves

    def _ratchet(self, leaf: int, kind: str) -> _HashRatchet:
        if kind not in (HANDSHAKE, APPLICATION):
            raise ValueError(f"kind must be {HANDSHAKE!r} or {APPLICATION!r}, not {kind!r}")
        if not 0 <= leaf < self._n_leaves:
            raise MLSError(f"leaf {leaf} is not in a tree of {self._n_leaves} leaves")
        r = self._ratchets.get((leaf, kind))
        if r is None:
            self._init_leaf(leaf)
            r = self._ratchets[(leaf, kind)]
        return r

    def _init_leaf(self, leaf: int) -> None:
        cs, target = self._cs, tm.leaf_to_node(leaf)
        x = tm.root(self._n_leaves)
        path = [x]
        while x != target:
            x = tm.left(x) if target < x else tm.right(x)
            path.append(x)
        start = max((i for i, node in enumerate(path) if node in self._nodes), default=None)
        if start is None:
            raise MLSError(f"the secrets of leaf {leaf} have been deleted")
        for node in path[start:-1]:
            secret = self._nodes.pop(node)
            self._nodes[tm.left(node)] = cs.expand_with_label(secret, "tree", b"left", cs.nh)
            self._nodes[tm.right(node)] = cs.expand_with_label(secret, "tree", b"right", cs.nh)
        leaf_secret = self._nodes.pop(target)
        for kind in (HANDSHAKE, APPLICATION):
            self._ratchets[(leaf, kind)] = _HashRatchet(cs, cs.expand_with_label(leaf_secret, kind, b"", cs.nh), self._max_skip)

    def key_nonce(self, leaf: int, kind: str, generation: int) -> tuple[bytes, bytes]:
        """The (key, nonce) of ``generation`` of leaf ``leaf``'s ``kind`` ratchet (``HANDSHAKE`` or
        ``APPLICATION``), moving the ratchet forward as needed and deleting what it used.

        Raises:
            MLSError: the leaf is outside the tree; the generation was already handed out or its
                key deleted; or it is more than ``max_skip`` ahead of the ratchet.
        """
        return self._ratchet(leaf, kind).get(generation)

    def peek_key_nonce(self, leaf: int, kind: str, generation: int) -> tuple[bytes, bytes]:
        """:meth:`key_nonce` without using the key up: call :meth:`key_nonce` once the message it
        opens has been checked, so a forged message cannot burn another sender's key.

        Raises:
            MLSError: as :meth:`key_nonce`."""
        return self._ratchet(leaf, kind).peek(generation)

    def next_key_nonce(self, leaf: int, kind: str) -> tuple[int, bytes, bytes]:
        """The sender's side: (generation, key, nonce) of the next unused generation of the ratchet."""
        return self._ratchet(leaf, kind).next()

    def generation(self, leaf: int, kind: str) -> int:
        """The next generation the ratchet would hand out."""
        return self._ratchet(leaf, kind).generation

    def state(self) -> list[Any]:
        """Plain values for storage (encrypted at rest by the caller): the node secrets not yet used
        and the ratchets started; nothing already deleted comes back."""
        return [self._n_leaves, self._max_skip, [[x, secret] for x, secret in sorted(self._nodes.items())],
                [[leaf, kind, r.state()] for (leaf, kind), r in sorted(self._ratchets.items())]]

    @classmethod
    def from_state(cls, cs: CipherSuite, state: Any) -> SecretTree:
        """Raises:
        MLSError: not a state :meth:`state` wrote."""
        try:
            n_leaves, max_skip, nodes, ratchets = state
            tree = cls(cs, bytes(cs.nh), n_leaves, max_skip=max_skip)
            tree._nodes = {}
            for x, secret in nodes:
                if not (isinstance(x, int) and 0 <= x < 2 * n_leaves - 1 and isinstance(secret, bytes) and len(secret) == cs.nh):
                    raise TypeError("node secret")
                tree._nodes[x] = secret
            for leaf, kind, rs in ratchets:
                if kind not in (HANDSHAKE, APPLICATION) or not (isinstance(leaf, int) and 0 <= leaf < n_leaves):
                    raise TypeError("ratchet")
                tree._ratchets[(leaf, kind)] = _HashRatchet.from_state(cs, rs, max_skip)
        except (TypeError, ValueError) as exc:
            raise MLSError(f"a stored secret tree is malformed: {exc}") from None
        return tree


def sender_data_key_nonce(cs: CipherSuite, sender_data_secret: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
    """The sender-data (key, nonce) of a PrivateMessage (§6.3.2), from its first Nh ciphertext bytes."""
    sample = bytes(ciphertext[: cs.nh])
    return (cs.expand_with_label(sender_data_secret, "key", sample, cs.nk),
            cs.expand_with_label(sender_data_secret, "nonce", sample, cs.nn))


# --- vector checks ------------------------------------------------------------------------


def _h(s: str) -> bytes:
    return bytes.fromhex(s)


def check_key_schedule(case: dict[str, Any]) -> None:
    """A key-schedule case: every epoch's GroupContext, secrets, external_pub and exporter."""
    cs = suite(case["cipher_suite"])
    group_id = _h(case["group_id"])
    init = _h(case["initial_init_secret"])
    for i, ep in enumerate(case["epochs"]):
        gc = GroupContext(1, cs.id, group_id, i, _h(ep["tree_hash"]), _h(ep["confirmed_transcript_hash"]), ())
        gc_bytes = gc.encode()
        expect(f"epoch {i}: group_context", gc_bytes, _h(ep["group_context"]))
        expect(f"epoch {i}: group_context decodes back", GroupContext.decode(gc_bytes), gc)
        psk = _h(ep["psk_secret"]) if ep.get("psk_secret") else None
        secrets = next_epoch(cs, init, _h(ep["commit_secret"]), psk, gc_bytes)
        for f in fields(EpochSecrets):
            if f.name == "epoch_secret":
                continue
            expect(f"epoch {i}: {f.name}", getattr(secrets, f.name), _h(ep[f.name]))
        expect(f"epoch {i}: welcome_secret from joiner_secret", welcome_secret(cs, secrets.joiner_secret, psk), secrets.welcome_secret)
        expect(f"epoch {i}: from_joiner", from_joiner(cs, secrets.joiner_secret, psk, gc) == secrets, True)
        expect(f"epoch {i}: external_pub", external_pub(cs, secrets.external_secret), _h(ep["external_pub"]))
        x = ep["exporter"]
        got = exporter(cs, secrets.exporter_secret, x["label"], _h(x["context"]), x["length"])
        expect(f"epoch {i}: exporter", got, _h(x["secret"]))
        init = secrets.init_secret


def check_psk_secret(case: dict[str, Any]) -> None:
    """A psk-secret case: external PSKs folded into the psk_secret."""
    cs = suite(case["cipher_suite"])
    psks = [(PreSharedKeyID.external(_h(p["psk_id"]), _h(p["psk_nonce"])), _h(p["psk"])) for p in case["psks"]]
    for i, (pid, _) in enumerate(psks):
        expect(f"psk {i}: PreSharedKeyID decodes back", PreSharedKeyID.decode(pid.encode()), pid)
    expect("psk_secret", psk_secret(cs, psks), _h(case["psk_secret"]))
    expect("psk_secret from encoded ids", psk_secret(cs, [(pid.encode(), psk) for pid, psk in psks]), _h(case["psk_secret"]))


def _leaf_entries(leaves: Iterable[Iterable[dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, entry) for i, entries in enumerate(leaves) for entry in entries]


def _check_entry(tree: SecretTree, leaf: int, entry: dict[str, Any], how: str) -> None:
    g = entry["generation"]
    for kind in (HANDSHAKE, APPLICATION):
        key, nonce = tree.key_nonce(leaf, kind, g)
        expect(f"{how}leaf {leaf} generation {g}: {kind}_key", key, _h(entry[f"{kind}_key"]))
        expect(f"{how}leaf {leaf} generation {g}: {kind}_nonce", nonce, _h(entry[f"{kind}_nonce"]))


def _expect_used(tree: SecretTree, leaf: int, kind: str, generation: int, how: str) -> None:
    try:
        tree.key_nonce(leaf, kind, generation)
    except MLSError:
        return
    raise AssertionError(f"{how}leaf {leaf} generation {generation}: a used {kind} key was handed out again")


def check_secret_tree(case: dict[str, Any]) -> None:
    """A secret-tree case: the sender-data key and nonce, and each leaf's ratchet keys; then the same
    in reverse order on a fresh tree (skipped keys kept), and that no key is handed out twice."""
    cs = suite(case["cipher_suite"])
    sd = case["sender_data"]
    key, nonce = sender_data_key_nonce(cs, _h(sd["sender_data_secret"]), _h(sd["ciphertext"]))
    expect("sender_data key", key, _h(sd["key"]))
    expect("sender_data nonce", nonce, _h(sd["nonce"]))
    secret, n = _h(case["encryption_secret"]), len(case["leaves"])
    entries = _leaf_entries(case["leaves"])
    tree = SecretTree(cs, secret, n)
    for leaf, entry in entries:
        _check_entry(tree, leaf, entry, "")
    backwards = SecretTree(cs, secret, n)
    for leaf, entry in reversed(entries):
        _check_entry(backwards, leaf, entry, "out of order: ")
    for t, how in ((tree, ""), (backwards, "out of order: ")):
        for leaf, entry in entries:
            for kind in (HANDSHAKE, APPLICATION):
                _expect_used(t, leaf, kind, entry["generation"], how)
