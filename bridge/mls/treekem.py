"""TreeKEM: a member's private view of the ratchet tree and the UpdatePath (RFC 9420 §7.4-§7.6, §7.9).

* :class:`TreeKEMPrivate` - the HPKE private keys a member holds: its leaf's and those of the nodes
  of its direct path it learnt from path secrets (§7.4), checked against a tree (the tree invariant).
* :func:`create_update_path` - the committer's side (§7.4, §7.5, §12.4.1): fresh path secrets, the
  merged tree with its parent hashes (§7.9), the re-signed leaf (§7.2), then the path secrets encrypted
  under the provisional GroupContext, which carries the tree hash of the merged tree (§7.6).
* :func:`apply_update_path` - a receiver merges an UpdatePath into its tree (§7.5, §12.4.2): the leaf's
  source, signature and parent hash, and the freshness of every public key, are checked.
* :func:`decrypt_path` - a receiver decrypts the path secret at its lowest common ancestor with the
  committer, from the copath node's resolution without the leaves added by the same Commit, and
  derives the rest of the path (§7.5, §7.6); :meth:`TreeKEMPrivate.from_welcome` does the same for a
  new member given the Welcome's path secret (§12.4.3.1).
* :func:`check_treekem` - the working group's "treekem" vectors (tests/vectors/mls/test-vectors.md).

Trees are :class:`bridge.mls.tree.RatchetTree` and never modified in place: each operation returns a
new one. Private keys and secrets never appear in a ``repr``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.mls import treemath as tm
from bridge.mls.checks import expect
from bridge.mls.errors import MLSError
from bridge.mls.messages import (
    GroupContext,
    HPKECiphertext,
    LeafNode,
    LeafNodeSource,
    ParentNode,
    ProtocolVersion,
    UpdatePath,
    UpdatePathNode,
)
from bridge.mls.suite import CipherSuite, suite
from bridge.mls.tree import RatchetTree

__all__ = [
    "UPDATE_PATH_LABEL",
    "TreeKEMPrivate",
    "CreatedPath",
    "derive_path",
    "create_update_path",
    "apply_update_path",
    "decrypt_path",
    "check_treekem",
]

#: The EncryptWithLabel label of the path secrets (§7.6).
UPDATE_PATH_LABEL = "UpdatePathNode"

GroupContextLike = GroupContext | bytes


def _gc_bytes(group_context: GroupContextLike) -> bytes:
    return group_context.encode() if isinstance(group_context, GroupContext) else bytes(group_context)


def _copath_child(p: int, x: int) -> int:
    """The child of ``p`` not on the way down to ``x`` (a descendant of ``p``)."""
    return tm.right(p) if x < p else tm.left(p)


def _key_pair(cs: CipherSuite, path_secret: bytes) -> tuple[bytes, bytes]:
    """§7.4: ``DeriveKeyPair(DeriveSecret(path_secret, "node"))``: (private, public)."""
    return cs.derive_key_pair(cs.derive_secret(path_secret, "node"))


def derive_path(cs: CipherSuite, path_secret: bytes, nodes: Sequence[int]) -> tuple[list[tuple[int, bytes]], bytes]:
    """§7.4: ``path_secret`` belongs to ``nodes[0]``; each next node's is ``DeriveSecret(previous, "path")``.
    Returns ([(node, path_secret)], commit_secret), the commit secret being the secret one step past
    the last node (``path_secret`` itself stepped once when ``nodes`` is empty)."""
    out: list[tuple[int, bytes]] = []
    secret = path_secret
    for i, node in enumerate(nodes):
        if i:
            secret = cs.derive_secret(secret, "path")
        out.append((node, secret))
    return out, cs.derive_secret(secret, "path")


def _public(cs: CipherSuite, private: bytes) -> bytes:
    try:
        return cs.hpke_public(private)
    except ValueError:
        raise MLSError("not an HPKE private key of the suite") from None


def _encryption_key(tree: RatchetTree, x: int) -> bytes:
    node = tree.nodes[x]
    if node is None:
        raise MLSError(f"node {x} is blank")
    return node.encryption_key


# --- a member's private keys --------------------------------------------------------------------


class TreeKEMPrivate:
    """A member's HPKE private keys: its leaf's (``leaf_private``) and a map node index -> private key
    for nodes of its direct path (``path_keys``). Mutable: :func:`decrypt_path` updates it; take a
    :meth:`copy` to keep the old state until a Commit is fully accepted."""

    def __init__(self, cs: CipherSuite, leaf_index: int, leaf_private: bytes, path_keys: Mapping[int, bytes] | None = None) -> None:
        self.cs = cs
        self.leaf_index = leaf_index
        self.leaf_private = bytes(leaf_private)
        self.path_keys: dict[int, bytes] = {int(k): bytes(v) for k, v in (path_keys or {}).items()}

    @classmethod
    def from_path_secrets(cls, cs: CipherSuite, leaf_index: int, leaf_private: bytes,
                          path_secrets: Iterable[tuple[int, bytes]] = ()) -> TreeKEMPrivate:
        """Each ``(node, path_secret)`` gives the node's key pair as in §7.4."""
        return cls(cs, leaf_index, leaf_private, {node: _key_pair(cs, secret)[0] for node, secret in path_secrets})

    @classmethod
    def from_welcome(cls, tree: RatchetTree, leaf_index: int, leaf_private: bytes, signer: int, path_secret: bytes) -> TreeKEMPrivate:
        """§12.4.3.1: a new member's keys, ``path_secret`` (GroupSecrets.path_secret) being that of its
        lowest common ancestor with leaf ``signer``, derived up the signer's filtered direct path.

        Raises:
            MLSError: the ancestor is not on the signer's filtered direct path, or a derived public key
            is not the tree's."""
        x, s = tm.leaf_to_node(leaf_index), tm.leaf_to_node(signer)
        if leaf_index == signer:
            raise MLSError("a path secret from oneself")
        fdp = tree.filtered_direct_path(signer)
        lca = tm.common_ancestor(x, s)
        if lca not in fdp:
            raise MLSError(f"node {lca}, the common ancestor of leaves {leaf_index} and {signer}, is not on the signer's filtered direct path")
        secrets, _ = derive_path(tree.cs, path_secret, fdp[fdp.index(lca):])
        private = cls.from_path_secrets(tree.cs, leaf_index, leaf_private, secrets)
        private.check(tree, complete=True)
        return private

    def copy(self) -> TreeKEMPrivate:
        return TreeKEMPrivate(self.cs, self.leaf_index, self.leaf_private, self.path_keys)

    def nodes(self) -> list[int]:
        """The node indices this member has a private key for, its leaf first."""
        return [tm.leaf_to_node(self.leaf_index)] + sorted(self.path_keys)

    def key(self, x: int) -> bytes | None:
        """The private key of node ``x``, or None."""
        if x == tm.leaf_to_node(self.leaf_index):
            return self.leaf_private
        return self.path_keys.get(x)

    def check(self, tree: RatchetTree, *, complete: bool = False) -> None:
        """The tree invariant: each key's node is the leaf or on its direct path, is not blank, and has
        the key's public key. With ``complete``, also a key for every non-blank parent of the direct
        path that does not list the leaf as unmerged.

        Raises:
            MLSError: naming the first node that does not hold."""
        leaf = tm.leaf_to_node(self.leaf_index)
        if not 0 <= self.leaf_index < tree.n_leaves:
            raise MLSError(f"leaf {self.leaf_index} is outside a tree of {tree.n_leaves} leaves")
        path = set(tm.direct_path(leaf, tree.n_leaves))
        for x in self.nodes():
            if x != leaf and x not in path:
                raise MLSError(f"node {x} is not on the direct path of leaf {self.leaf_index}")
            node = tree.nodes[x]
            if node is None:
                raise MLSError(f"a private key for node {x}, which is blank")
            if _public(self.cs, self.key(x) or b"") != node.encryption_key:
                raise MLSError(f"the private key for node {x} does not match its encryption_key")
        if complete:
            for p in sorted(path):
                parent = tree.nodes[p]
                if isinstance(parent, ParentNode) and self.leaf_index not in parent.unmerged_leaves and p not in self.path_keys:
                    raise MLSError(f"no private key for node {p} on the direct path of leaf {self.leaf_index}")

    def prune(self, tree: RatchetTree) -> None:
        """Forget path keys whose node is blank, off the direct path, or holds another public key."""
        path = set(tm.direct_path(tm.leaf_to_node(self.leaf_index), tree.n_leaves))
        for x in list(self.path_keys):
            node = tree.nodes[x] if x < len(tree.nodes) else None
            if x not in path or node is None or _public(self.cs, self.path_keys[x]) != node.encryption_key:
                del self.path_keys[x]

    def __repr__(self) -> str:
        return f"TreeKEMPrivate(suite=0x{self.cs.id:04x}, leaf_index={self.leaf_index}, nodes={self.nodes()})"


# --- merging an UpdatePath (§7.5, §7.9) -----------------------------------------------------------------


def _merge(tree: RatchetTree, sender: int, leaf: LeafNode, keys: Sequence[bytes]) -> tuple[RatchetTree, bytes]:
    """The tree with ``leaf`` at ``sender``, its direct path blanked but for the filtered direct path's
    nodes, which get ``keys``, no unmerged leaves and their parent hashes (computed root first).
    Returns (tree, the parent hash the leaf must carry)."""
    x = tm.leaf_to_node(sender)
    fdp = tree.filtered_direct_path(sender)
    if len(keys) != len(fdp):
        raise MLSError(f"the UpdatePath has {len(keys)} nodes; the filtered direct path of leaf {sender} has {len(fdp)}")
    new = tree.copy()
    new.nodes[x] = leaf
    for p in tm.direct_path(x, new.n_leaves):
        new.nodes[p] = None
    above = b""
    for i in reversed(range(len(fdp))):
        new.nodes[fdp[i]] = ParentNode(keys[i], above, ())
        above = new.parent_hash(fdp[i], _copath_child(fdp[i], x))
    return new, above


def apply_update_path(tree: RatchetTree, sender: int, update_path: UpdatePath, group_id: bytes) -> RatchetTree:
    """§7.5, §12.4.2: a receiver merges ``update_path`` from leaf ``sender`` into ``tree`` (the tree with
    the Commit's proposals applied) and returns the new tree; ``tree`` is unchanged.

    Checked: the sender's leaf is not blank; the new leaf's source is ``commit``, its encryption key
    differs from the sender's current one, no public key of the path is already in the tree or
    repeated, the number of path nodes is the filtered direct path's, the leaf's parent hash is that
    of the merged path (§7.9.2) and its signature verifies over LeafNodeTBS with ``group_id`` and
    ``sender``. The leaf's credential, capabilities and extensions against the group (§7.3) are the
    caller's to check.

    Raises:
        MLSError: any of the above does not hold."""
    old = tree.leaf(sender)
    if old is None:
        raise MLSError(f"leaf {sender} is blank: it cannot commit a path")
    leaf = update_path.leaf_node
    if leaf.leaf_node_source != LeafNodeSource.COMMIT:
        raise MLSError(f"the UpdatePath's leaf has source {leaf.leaf_node_source.name.lower()}, not commit")
    if leaf.encryption_key == old.encryption_key:
        raise MLSError("the UpdatePath's leaf keeps the committer's encryption key")
    keys = [leaf.encryption_key] + [n.encryption_key for n in update_path.nodes]
    existing = {n.encryption_key for n in tree.nodes if n is not None}
    if len(set(keys)) != len(keys) or existing.intersection(keys):
        raise MLSError("a public key of the UpdatePath is repeated or already in the tree")
    for i, other in tree.leaves():
        if i != sender and other.signature_key == leaf.signature_key:
            raise MLSError(f"the UpdatePath's leaf has the signature key of leaf {i}")
    new, parent_hash = _merge(tree, sender, leaf, [n.encryption_key for n in update_path.nodes])
    if leaf.parent_hash != parent_hash:
        raise MLSError("the UpdatePath's leaf parent hash is not that of its path")
    if not new.leaf_signature_valid(group_id, sender):
        raise MLSError("the UpdatePath's leaf signature does not verify")
    return new


# --- receiving: decrypting the path (§7.5, §7.6) ----------------------------------------------------------


def decrypt_path(private: TreeKEMPrivate, tree: RatchetTree, sender: int, update_path: UpdatePath,
                 group_context: GroupContextLike, excluded: Iterable[int] = ()) -> tuple[bytes, bytes]:
    """§7.5: decrypt the path secret of the lowest common ancestor of ``private``'s leaf and
    ``sender``'s, and derive the path above it.

    ``tree`` is the tree after :func:`apply_update_path`; ``group_context`` the provisional
    GroupContext (its tree hash is ``tree``'s); ``excluded`` the leaf indices added by the same Commit,
    which are left out of every copath resolution. Every path node must carry one ciphertext per
    node of that resolution, and every derived public key must be the UpdatePath's.

    On success ``private`` forgets its keys on the sender's direct path and takes the derived ones;
    on failure it is unchanged. Returns (path secret at the common ancestor, commit_secret).

    Raises:
        VerifyError: the ciphertext does not open;
        MLSError: anything else (no key for the resolution, wrong count, inconsistent public key)."""
    cs = tree.cs
    me, x = private.leaf_index, tm.leaf_to_node(sender)
    gone = {tm.leaf_to_node(i) for i in excluded}
    if me == sender:
        raise MLSError("the committer does not decrypt its own path")
    if tm.leaf_to_node(me) in gone:
        raise MLSError(f"leaf {me} was added by this Commit: it joins by the Welcome")
    fdp = tree.filtered_direct_path(sender)
    if len(update_path.nodes) != len(fdp):
        raise MLSError(f"the UpdatePath has {len(update_path.nodes)} nodes; the filtered direct path of leaf {sender} has {len(fdp)}")
    resolutions = [[r for r in tree.resolution(_copath_child(p, x)) if r not in gone] for p in fdp]
    for p, res, node in zip(fdp, resolutions, update_path.nodes):
        if len(node.encrypted_path_secret) != len(res):
            raise MLSError(f"path node {p} has {len(node.encrypted_path_secret)} ciphertexts for a resolution of {len(res)}")
    lca = tm.common_ancestor(x, tm.leaf_to_node(me))
    if lca not in fdp:
        raise MLSError(f"node {lca}, the common ancestor with leaf {sender}, is not on its filtered direct path")
    k = fdp.index(lca)
    chosen = None
    for pos, r in enumerate(resolutions[k]):
        key = private.key(r)
        if key is not None and tree.nodes[r] is not None and _public(cs, key) == _encryption_key(tree, r):
            chosen = pos, key
            break
    if chosen is None:
        raise MLSError(f"leaf {me} holds no private key for the resolution of node {_copath_child(lca, x)}")
    pos, key = chosen
    ct = update_path.nodes[k].encrypted_path_secret[pos]
    path_secret = cs.decrypt_with_label(key, UPDATE_PATH_LABEL, _gc_bytes(group_context), ct.kem_output, ct.ciphertext)
    secrets, commit_secret = derive_path(cs, path_secret, fdp[k:])
    new_keys: dict[int, bytes] = {}
    for (p, secret), node in zip(secrets, update_path.nodes[k:]):
        priv, pub = _key_pair(cs, secret)
        if pub != node.encryption_key or pub != _encryption_key(tree, p):
            raise MLSError(f"the path secret of node {p} does not give the UpdatePath's public key")
        new_keys[p] = priv
    for p in tm.direct_path(x, tree.n_leaves):
        private.path_keys.pop(p, None)
    private.path_keys.update(new_keys)
    return path_secret, commit_secret


# --- committing: creating a path (§7.4-§7.6, §12.4.1) -------------------------------------------------------


@dataclass(frozen=True)
class CreatedPath:
    """What :func:`create_update_path` makes: the merged ``tree``, the ``update_path`` to send, the
    committer's new ``private`` keys, the ``commit_secret`` and the path secret of each node of the
    filtered direct path (``path_secrets``, for the Welcome: see :meth:`path_secret_for`)."""

    tree: RatchetTree
    update_path: UpdatePath
    private: TreeKEMPrivate
    commit_secret: bytes = field(repr=False)
    path_secrets: Mapping[int, bytes] = field(repr=False)

    def path_secret_for(self, leaf: int) -> bytes:
        """§12.4.3.1: the GroupSecrets.path_secret for a new member at ``leaf``: the secret of its
        lowest common ancestor with the committer.

        Raises:
            MLSError: ``leaf`` is the committer's."""
        lca = tm.common_ancestor(tm.leaf_to_node(leaf), tm.leaf_to_node(self.private.leaf_index))
        if lca not in self.path_secrets:
            raise MLSError(f"no path secret for leaf {leaf}: node {lca} is not on the committer's filtered direct path")
        return self.path_secrets[lca]


def create_update_path(
    tree: RatchetTree,
    leaf_index: int,
    signature_private: bytes,
    group_id: bytes,
    group_context: Callable[[RatchetTree], GroupContextLike],
    *,
    new_leaf: LeafNode | None = None,
    excluded: Iterable[int] = (),
    leaf_secret: bytes | None = None,
) -> CreatedPath:
    """§7.4-§7.6, §12.4.1: a fresh path for the member at ``leaf_index`` of ``tree`` (the tree with the
    Commit's proposals applied; it is unchanged).

    ``leaf_secret`` (random Nh bytes when None) seeds everything: the leaf key pair is
    ``DeriveKeyPair(DeriveSecret(leaf_secret, "node"))`` and the first path secret
    ``DeriveSecret(leaf_secret, "path")`` (the derivation figure of §7.4). ``new_leaf`` gives the new
    leaf's other fields (signature key, credential, capabilities, extensions; the current leaf when
    None); its encryption key, source (commit), parent hash and signature are set here, signed with
    ``signature_private`` over LeafNodeTBS with ``group_id``. ``group_context`` is called with the
    merged tree and returns the provisional GroupContext (whose tree hash is that tree's); the path
    secrets are encrypted under it to each copath resolution without the ``excluded`` leaves (those
    added by the same Commit).

    Raises:
        MLSError: the leaf is blank, or ``signature_private`` is not the new leaf's signature key."""
    cs = tree.cs
    current = tree.leaf(leaf_index)
    if current is None:
        raise MLSError(f"leaf {leaf_index} is blank: it cannot commit a path")
    template = current if new_leaf is None else new_leaf
    if cs.signature_public(signature_private) != template.signature_key:
        raise MLSError("the signature private key is not the leaf's signature key")
    seed = os.urandom(cs.nh) if leaf_secret is None else bytes(leaf_secret)
    leaf_private, leaf_public = _key_pair(cs, seed)
    fdp = tree.filtered_direct_path(leaf_index)
    secrets, commit_secret = derive_path(cs, cs.derive_secret(seed, "path"), fdp)
    pairs = [_key_pair(cs, secret) for _, secret in secrets]

    unsigned = dataclasses.replace(template, encryption_key=leaf_public, leaf_node_source=LeafNodeSource.COMMIT,
                                   lifetime=None, parent_hash=b"", signature=b"")
    new, parent_hash = _merge(tree, leaf_index, unsigned, [pub for _, pub in pairs])
    unsigned = dataclasses.replace(unsigned, parent_hash=parent_hash)
    leaf = dataclasses.replace(unsigned, signature=cs.sign_with_label(signature_private, "LeafNodeTBS", unsigned.tbs(group_id, leaf_index)))
    new.nodes[tm.leaf_to_node(leaf_index)] = leaf

    context = _gc_bytes(group_context(new))
    x = tm.leaf_to_node(leaf_index)
    gone = {tm.leaf_to_node(i) for i in excluded}
    path_nodes = []
    for (p, secret), (_, pub) in zip(secrets, pairs):
        recipients = [r for r in new.resolution(_copath_child(p, x)) if r not in gone]
        cts = tuple(HPKECiphertext(*cs.encrypt_with_label(_encryption_key(new, r), UPDATE_PATH_LABEL, context, secret)) for r in recipients)
        path_nodes.append(UpdatePathNode(pub, cts))
    private = TreeKEMPrivate(cs, leaf_index, leaf_private, {p: priv for p, (priv, _) in zip(fdp, pairs)})
    return CreatedPath(new, UpdatePath(leaf, tuple(path_nodes)), private, commit_secret, dict(secrets))


# --- the working group's vectors (tests/vectors/mls/test-vectors.md, "TreeKEM") ----------------------------


def _h(s: str) -> bytes:
    return bytes.fromhex(s)


def check_treekem(case: dict[str, Any]) -> None:
    """Private states consistent with the tree; each UpdatePath merged (parent-hash valid, the tree
    hash after), decrypted by every other member (its path secret, the commit secret); then a fresh
    UpdatePath from each sender, decrypted by every other member to the same commit secret."""
    cs = suite(case["cipher_suite"])
    group_id = _h(case["group_id"])
    tree = RatchetTree.decode(cs, _h(case["ratchet_tree"]))

    def context(t: RatchetTree) -> bytes:
        return GroupContext(ProtocolVersion.MLS10, cs.id, group_id, case["epoch"], t.tree_hash(),
                            _h(case["confirmed_transcript_hash"]), ()).encode()

    privates: dict[int, TreeKEMPrivate] = {}
    signature_keys: dict[int, bytes] = {}
    for entry in case["leaves_private"]:
        i = entry["index"]
        privates[i] = TreeKEMPrivate.from_path_secrets(
            cs, i, _h(entry["encryption_priv"]), [(s["node"], _h(s["path_secret"])) for s in entry["path_secrets"]])
        privates[i].check(tree, complete=True)
        signature_keys[i] = _h(entry["signature_priv"])
    members = [i for i, _ in tree.leaves()]
    expect("private states of the members", sorted(privates), members)

    for n, entry in enumerate(case["update_paths"]):
        sender = entry["sender"]
        path = UpdatePath.decode(_h(entry["update_path"]))
        merged = apply_update_path(tree, sender, path, group_id)
        expect(f"update_paths[{n}]: tree hash after", merged.tree_hash(), _h(entry["tree_hash_after"]))
        gc = context(merged)
        for j in members:
            if j == sender:
                continue
            receiver = privates[j].copy()
            secret, commit_secret = decrypt_path(receiver, merged, sender, path, gc)
            receiver.check(merged, complete=True)
            expect(f"update_paths[{n}]: path secret of leaf {j}", secret, _h(entry["path_secrets"][j]))
            expect(f"update_paths[{n}]: commit secret at leaf {j}", commit_secret, _h(entry["commit_secret"]))

        created = create_update_path(tree, sender, signature_keys[sender], group_id, context)
        created.private.check(created.tree, complete=True)
        ours = created.update_path
        merged = apply_update_path(tree, sender, UpdatePath.decode(ours.encode()), group_id)
        expect(f"update_paths[{n}]: our merged tree", merged, created.tree)
        gc = context(merged)
        for j in members:
            if j == sender:
                continue
            receiver = privates[j].copy()
            _, commit_secret = decrypt_path(receiver, merged, sender, ours, gc)
            expect(f"update_paths[{n}]: our commit secret at leaf {j}", commit_secret, created.commit_secret)
            receiver.check(merged, complete=True)
