"""The ratchet tree's operations beyond what the working group's tree vectors exercise (issue 14):
an added member is an unmerged leaf of every non-blank parent above it, a removal truncates, and
a tampered tree fails its parent-hash and signature checks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bridge.mls import treemath as tm
from bridge.mls.errors import MLSError
from bridge.mls.messages import ParentNode
from bridge.mls.suite import suite
from bridge.mls.tree import RatchetTree

CASES = json.loads((Path(__file__).parent / "vectors" / "mls" / "tree-validation.json").read_text())


def _full_tree(n_leaves: int) -> tuple[RatchetTree, bytes]:
    for case in CASES:
        if case["cipher_suite"] == 1:
            tree = RatchetTree.decode(suite(1), bytes.fromhex(case["tree"]))
            if tree.n_leaves == n_leaves and all(n is not None for n in tree.nodes):
                return tree, bytes.fromhex(case["group_id"])
    raise LookupError(f"no full tree of {n_leaves} leaves in the vectors")


def test_an_added_member_is_unmerged_at_every_nonblank_parent_above_it() -> None:
    tree, _ = _full_tree(8)
    leaf = tree.leaf(3)
    assert leaf is not None
    tree.nodes[tm.leaf_to_node(3)] = None  # a blank leaf under non-blank parents
    assert tree.add(leaf) == 3
    for p in tm.direct_path(tm.leaf_to_node(3), tree.n_leaves):
        node = tree.nodes[p]
        assert isinstance(node, ParentNode) and 3 in node.unmerged_leaves
        assert tm.leaf_to_node(3) in tree.resolution(p)
    # with no blank leaf left, the tree doubles and the new leaf is the first of the new half
    assert tree.add(leaf) == 8 and tree.n_leaves == 16


def test_removing_the_right_half_truncates_and_blank_leaves_cannot_be_removed() -> None:
    tree, _ = _full_tree(8)
    for i in (7, 6, 5):
        tree.remove(i)
        assert tree.n_leaves == 8
    tree.remove(4)
    assert tree.n_leaves == 4 and len(tree.nodes) == 7
    with pytest.raises(MLSError):
        tree.remove(4)
    with pytest.raises(MLSError):
        tree.update(7, tree.leaf(0))  # type: ignore[arg-type]


def test_a_tampered_parent_or_leaf_fails_the_checks() -> None:
    tree, group_id = _full_tree(8)
    assert tree.parent_hashes_valid() and tree.leaf_signatures_valid(group_id)
    p = tm.parent(tm.leaf_to_node(2), 8)
    bad = tree.copy()
    node = bad.nodes[p]
    assert isinstance(node, ParentNode)
    bad.nodes[p] = dataclasses.replace(node, encryption_key=bytes(32))
    assert not bad.parent_hashes_valid()
    bad = tree.copy()
    leaf = bad.leaf(5)
    assert leaf is not None
    bad.nodes[tm.leaf_to_node(5)] = dataclasses.replace(leaf, encryption_key=bytes(32))
    assert not bad.leaf_signatures_valid(group_id)
    assert not tree.leaf_signatures_valid(group_id + b"x")  # signatures bind the group


def test_hashing_a_tree_keeps_none_of_its_nodes_alive_afterwards() -> None:
    """Tree hashes reuse node encodings: the cache must not pin the nodes of trees long gone (a
    daemon with many groups would grow without bound)."""
    import gc

    from bridge.mls import tree as tree_module

    tree = RatchetTree.decode(suite(1), bytes.fromhex(next(c for c in CASES if c["cipher_suite"] == 1)["tree"]))
    before = len(tree_module._CACHE)
    tree.tree_hash()
    assert len(tree_module._CACHE) > before
    del tree
    gc.collect()
    assert len(tree_module._CACHE) == before
