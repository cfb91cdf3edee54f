"""The ratchet tree (RFC 9420 §4, §7): nodes in array order, blanks as ``None``, with

* the ``ratchet_tree`` encoding (§12.4.3.3: ``optional<Node> ratchet_tree<V>``, trailing blanks cut
  when written, and restored when read, to a full tree of a power-of-two leaves);
* resolutions (§4.1.1), tree hashes (§7.8) and parent hashes (§7.9), with the check that every
  non-blank parent node is covered by exactly one parent-hash chain from a leaf (§7.9.2);
* the leaf signatures (§7.2) and the proposals' effect on the tree: add, update, remove with
  truncation (§7.7, §12.1).

Leaf nodes are :class:`bridge.mls.messages.LeafNode`, parent nodes :class:`~bridge.mls.messages.ParentNode`.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from typing import Any, Union

from bridge.mls import treemath as tm
from bridge.mls.errors import MLSError
from bridge.mls import messages as M
from bridge.mls.messages import LeafNode, LeafNodeSource, ParentNode
from bridge.mls.suite import CipherSuite
from bridge.mls.checks import expect
from bridge.mls.suite import suite
from bridge.mls.tls import Writer, opaque

__all__ = ["RatchetTree", "Node", "MAX_LEAVES", "check_tree_validation", "check_tree_operations"]

Node = Union[LeafNode, ParentNode, None]

_LEAF, _PARENT = 1, 2
#: The most leaves a tree may have here (RFC 9420 allows 2^32; a decoded tree is held in memory).
MAX_LEAVES = 1 << 16


#: Per live node (keyed by identity; nodes are immutable): its encoding and its leaf hashes by
#: (suite, leaf index). An entry goes when its node is collected, so nothing here keeps a node alive.
#: Hashing a tree of 1,000 members again after a commit re-encodes only what changed.
_CACHE: dict[int, tuple[bytes, dict[tuple[int, int], bytes]]] = {}


def _entry(node: LeafNode | ParentNode) -> tuple[bytes, dict[tuple[int, int], bytes]]:
    entry = _CACHE.get(id(node))
    if entry is None:
        entry = _CACHE[id(node)] = (node.encode(), {})
        weakref.finalize(node, _CACHE.pop, id(node), None)
    return entry


def _encoded(node: LeafNode | ParentNode) -> bytes:
    return _entry(node)[0]


def _leaf_hash(cs: CipherSuite, index: int, node: Node) -> bytes:
    if node is None:
        return cs.hash(b"\x01" + index.to_bytes(4, "big") + b"\x00")
    data, hashes = _entry(node)
    h = hashes.get((cs.id, index))
    if h is None:
        h = hashes[(cs.id, index)] = cs.hash(b"\x01" + index.to_bytes(4, "big") + b"\x01" + data)
    return h


class RatchetTree:
    """A ratchet tree of a cipher suite. ``nodes`` always has ``2 * n_leaves - 1`` entries, with
    ``n_leaves`` a power of two; leaves at even indices."""

    def __init__(self, cs: CipherSuite, nodes: Sequence[Node]) -> None:
        self.cs = cs
        self.nodes: list[Node] = list(nodes)
        n = (len(self.nodes) + 1) // 2
        if not self.nodes or len(self.nodes) % 2 == 0 or n & (n - 1):
            raise MLSError(f"a ratchet tree of {len(self.nodes)} nodes is not a full tree")
        for i, node in enumerate(self.nodes):
            if node is not None and isinstance(node, LeafNode) != tm.is_leaf(i):
                raise MLSError(f"node {i} is a {'leaf' if isinstance(node, LeafNode) else 'parent'} node at a {'leaf' if tm.is_leaf(i) else 'parent'} position")

    # --- encoding --------------------------------------------------------------------

    @classmethod
    def decode(cls, cs: CipherSuite, data: bytes) -> RatchetTree:
        """The ``ratchet_tree`` extension's encoding (:class:`bridge.mls.messages.RatchetTree`),
        padded with blanks to a full tree.

        Raises:
            DecodeError: malformed (a blank last node, a parent at a leaf position: see messages.RatchetTree);
            MLSError: more than MAX_LEAVES leaves."""
        wire = M.RatchetTree.decode(data)
        nodes: list[Node] = [None if n is None else n.leaf_node if n.leaf_node is not None else n.parent_node for n in wire.nodes]
        n = 1
        while 2 * n - 1 < len(nodes):
            n *= 2
        if n > MAX_LEAVES:
            raise MLSError(f"a tree of more than {MAX_LEAVES} leaves")
        return cls(cs, nodes + [None] * (2 * n - 1 - len(nodes)))

    def encode(self) -> bytes:
        """Trailing blank nodes are cut (§12.4.3.3)."""
        end = len(self.nodes)
        while end > 0 and self.nodes[end - 1] is None:
            end -= 1
        return M.RatchetTree(tuple(
            None if x is None else M.Node.leaf(x) if isinstance(x, LeafNode) else M.Node.parent(x) for x in self.nodes[:end]
        )).encode()

    def copy(self) -> RatchetTree:
        return RatchetTree(self.cs, self.nodes)

    # --- shape ---------------------------------------------------------------------------

    @property
    def n_leaves(self) -> int:
        return (len(self.nodes) + 1) // 2

    def leaf(self, i: int) -> LeafNode | None:
        """Leaf ``i``, or None when blank or outside the tree."""
        if not 0 <= i < self.n_leaves:
            return None
        node = self.nodes[2 * i]
        return node if isinstance(node, LeafNode) else None

    def leaves(self) -> list[tuple[int, LeafNode]]:
        """The non-blank leaves, by leaf index."""
        return [(i, n) for i in range(self.n_leaves) if (n := self.leaf(i)) is not None]

    def resolution(self, x: int) -> list[int]:
        """§4.1.1: the node itself and its unmerged leaves (as node indices) when not blank; for a blank
        leaf nothing; for a blank parent the resolutions of its children."""
        node = self.nodes[x]
        if node is not None:
            if isinstance(node, ParentNode):
                return [x] + [tm.leaf_to_node(u) for u in node.unmerged_leaves]
            return [x]
        if tm.is_leaf(x):
            return []
        return self.resolution(tm.left(x)) + self.resolution(tm.right(x))

    def filtered_direct_path(self, leaf: int) -> list[int]:
        """§4.1.2: the direct path of ``leaf`` without the nodes whose child on the copath side has an
        empty resolution."""
        x = tm.leaf_to_node(leaf)
        out = []
        for p in tm.direct_path(x, self.n_leaves):
            copath_child = tm.right(p) if x < p else tm.left(p)
            if self.resolution(copath_child):
                out.append(p)
            x = p
        return out

    # --- hashes (§7.8, §7.9) ------------------------------------------------------------------

    def tree_hashes(self) -> list[bytes]:
        """The tree hash of every node, by node index."""
        out: list[bytes] = [b""] * len(self.nodes)
        self._subtree_hash(tm.root(self.n_leaves), out)
        return out

    def subtree_hash(self, x: int) -> bytes:
        """The tree hash of node ``x`` (only its subtree is hashed)."""
        return self._subtree_hash(x, None)

    def _subtree_hash(self, x: int, out: list[bytes] | None) -> bytes:
        node = self.nodes[x]
        if tm.is_leaf(x):
            h = _leaf_hash(self.cs, tm.node_to_leaf(x), node)
        else:
            left, right = self._subtree_hash(tm.left(x), out), self._subtree_hash(tm.right(x), out)
            h = self.cs.hash(b"\x02" + (b"\x01" + _encoded(node) if node is not None else b"\x00") + opaque(left) + opaque(right))
        if out is not None:
            out[x] = h
        return h

    def tree_hash(self) -> bytes:
        """The root's tree hash (the GroupContext's ``tree_hash``)."""
        return self.tree_hashes()[tm.root(self.n_leaves)]

    def _without(self, leaves: Sequence[int]) -> RatchetTree:
        """This tree with ``leaves`` blanked and struck from every unmerged-leaves list (§7.9)."""
        if not leaves:
            return self
        gone = set(leaves)
        nodes: list[Node] = []
        for i, node in enumerate(self.nodes):
            if tm.is_leaf(i) and tm.node_to_leaf(i) in gone:
                nodes.append(None)
            elif isinstance(node, ParentNode) and gone & set(node.unmerged_leaves):
                nodes.append(dataclasses.replace(node, unmerged_leaves=tuple(u for u in node.unmerged_leaves if u not in gone)))
            else:
                nodes.append(node)
        return RatchetTree(self.cs, nodes)

    def parent_hash(self, p: int, sibling: int) -> bytes:
        """§7.9: the parent hash of parent node ``p`` as seen from its child on the other side of
        ``sibling`` (the original sibling tree hash: ``sibling``'s subtree without ``p``'s unmerged leaves)."""
        node = self.nodes[p]
        if not isinstance(node, ParentNode):
            raise MLSError(f"node {p} is not a parent node")
        original = self._without(node.unmerged_leaves).subtree_hash(sibling)
        return self.cs.hash(Writer().opaque(node.encryption_key).opaque(node.parent_hash).opaque(original).bytes())

    def _nearest_nonblank_ancestor(self, x: int) -> int | None:
        r, n = tm.root(self.n_leaves), self.n_leaves
        while x != r:
            x = tm.parent(x, n)
            if self.nodes[x] is not None:
                return x
        return None

    def parent_hashes_valid(self) -> bool:
        """§7.9.2: every non-blank parent node is the end of exactly one parent-hash link from below
        (a chain that starts at a leaf whose source is ``commit``)."""
        covered: dict[int, int] = {}
        for leaf_index, _ in self.leaves():
            x = tm.leaf_to_node(leaf_index)
            while True:
                node = self.nodes[x]
                stored = node.parent_hash if isinstance(node, ParentNode) else getattr(node, "parent_hash", None)
                p = self._nearest_nonblank_ancestor(x)
                if p is None or not stored:
                    break
                sibling = tm.right(p) if x < p else tm.left(p)
                if self.parent_hash(p, sibling) != stored:
                    break
                covered[p] = covered.get(p, 0) + 1
                x = p
        parents = [i for i, n in enumerate(self.nodes) if isinstance(n, ParentNode)]
        return all(covered.get(p, 0) == 1 for p in parents)

    # --- leaves' signatures (§7.2) ---------------------------------------------------------------

    def leaf_signature_valid(self, group_id: bytes, index: int) -> bool:
        """§7.2: the leaf's signature over LeafNodeTBS (with the group id and its index unless it
        came from a key package)."""
        leaf = self.leaf(index)
        if leaf is None:
            return False
        tbs = leaf.tbs() if leaf.leaf_node_source == LeafNodeSource.KEY_PACKAGE else leaf.tbs(group_id, index)
        return self.cs.verify_with_label(leaf.signature_key, "LeafNodeTBS", tbs, leaf.signature)

    def leaf_signatures_valid(self, group_id: bytes) -> bool:
        return all(self.leaf_signature_valid(group_id, i) for i, _ in self.leaves())

    # --- proposals' effect (§7.7, §12.1) -------------------------------------------------------

    def add(self, leaf: LeafNode) -> int:
        """The new member's leaf goes to the leftmost blank leaf (the tree doubles when there is none);
        it is an unmerged leaf of every non-blank parent above it. Returns its leaf index."""
        index = next((i for i in range(self.n_leaves) if self.nodes[2 * i] is None), None)
        if index is None:
            if self.n_leaves * 2 > MAX_LEAVES:
                raise MLSError(f"a group of more than {MAX_LEAVES} leaves")
            index = self.n_leaves
            self.nodes += [None] * (len(self.nodes) + 1)
        x = tm.leaf_to_node(index)
        for p in tm.direct_path(x, self.n_leaves):
            node = self.nodes[p]
            if isinstance(node, ParentNode):
                self.nodes[p] = dataclasses.replace(node, unmerged_leaves=tuple(node.unmerged_leaves) + (index,))
        self.nodes[x] = leaf
        return index

    def update(self, sender: int, leaf: LeafNode) -> None:
        """The sender's new leaf; its direct path is blanked."""
        if self.leaf(sender) is None:
            raise MLSError(f"leaf {sender} is blank: it cannot update")
        x = tm.leaf_to_node(sender)
        self.nodes[x] = leaf
        for p in tm.direct_path(x, self.n_leaves):
            self.nodes[p] = None

    def remove(self, removed: int) -> None:
        """The leaf and its direct path are blanked, then the tree is truncated while its right half is blank."""
        if self.leaf(removed) is None:
            raise MLSError(f"leaf {removed} is blank: it cannot be removed")
        x = tm.leaf_to_node(removed)
        self.nodes[x] = None
        for p in tm.direct_path(x, self.n_leaves):
            self.nodes[p] = None
        self.truncate()

    def truncate(self) -> None:
        while self.n_leaves > 1 and all(n is None for n in self.nodes[self.n_leaves:]):
            half = self.n_leaves // 2
            self.nodes = self.nodes[: 2 * half - 1]

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, RatchetTree) and self.cs == other.cs and self.nodes == other.nodes


# --- the working group's vectors (tests/vectors/mls/test-vectors.md) ---------------------------------


def _h(s: str) -> bytes:
    return bytes.fromhex(s)


def check_tree_validation(case: dict[str, Any]) -> None:
    """Resolutions and tree hashes of every node, parent hashes as when joining, leaf signatures."""
    cs = suite(case["cipher_suite"])
    tree = RatchetTree.decode(cs, _h(case["tree"]))
    expect("width", len(tree.nodes) >= len(case["resolutions"]), True)
    for i, want in enumerate(case["resolutions"]):
        expect(f"resolution of node {i}", tree.resolution(i), want)
    hashes = tree.tree_hashes()
    for i, want in enumerate(case["tree_hashes"]):
        expect(f"tree hash of node {i}", hashes[i], _h(want))
    expect("parent hashes valid", tree.parent_hashes_valid(), True)
    expect("leaf signatures valid", tree.leaf_signatures_valid(_h(case["group_id"])), True)


def check_tree_operations(case: dict[str, Any]) -> None:
    """An add, update or remove applied to a tree: the tree and its hash before and after."""
    cs = suite(case["cipher_suite"])
    tree = RatchetTree.decode(cs, _h(case["tree_before"]))
    expect("tree hash before", tree.tree_hash(), _h(case["tree_hash_before"]))
    body = M.Proposal.decode(_h(case["proposal"])).body
    if isinstance(body, M.Add):
        tree.add(body.key_package.leaf_node)
    elif isinstance(body, M.Update):
        tree.update(case["proposal_sender"], body.leaf_node)
    elif isinstance(body, M.Remove):
        tree.remove(body.removed)
    else:
        raise AssertionError(f"a {type(body).__name__} proposal does not change the tree")
    expect("tree after", tree.encode(), _h(case["tree_after"]))
    expect("tree hash after", tree.tree_hash(), _h(case["tree_hash_after"]))
