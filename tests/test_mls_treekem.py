"""TreeKEM against hostile committers (RFC 9420 §7.5, §7.6, §7.9, §12.4.2), beyond the working group's
treekem vectors, whose UpdatePaths are all honest: a bad leaf signature, a broken parent-hash chain,
the wrong number of path nodes, a ciphertext that does not open, a path secret whose keys are not the
UpdatePath's, reused keys; and the leaves added by the same Commit, which the vectors never have."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bridge.mls import treemath as tm
from bridge.mls.errors import MLSError, VerifyError
from bridge.mls.messages import (
    GroupContext,
    HPKECiphertext,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    ProtocolVersion,
    UpdatePath,
)
from bridge.mls.suite import suite
from bridge.mls.tree import RatchetTree
from bridge.mls.treekem import (
    UPDATE_PATH_LABEL,
    TreeKEMPrivate,
    apply_update_path,
    create_update_path,
    decrypt_path,
)

CASES = json.loads((Path(__file__).parent / "vectors" / "mls" / "treekem.json").read_text())
CS = suite(1)


def _h(s: str) -> bytes:
    return bytes.fromhex(s)


class Group:
    """One suite-1 treekem case of 8 leaves with a blank leaf (leaf 3): its tree and members' keys."""

    def __init__(self) -> None:
        self.case: dict[str, Any] = next(
            c for c in CASES
            if c["cipher_suite"] == 1 and (t := RatchetTree.decode(CS, _h(c["ratchet_tree"]))).n_leaves == 8 and t.leaf(3) is None
        )
        self.group_id = _h(self.case["group_id"])
        self.tree = RatchetTree.decode(CS, _h(self.case["ratchet_tree"]))
        self.privates = {
            e["index"]: TreeKEMPrivate.from_path_secrets(CS, e["index"], _h(e["encryption_priv"]),
                                                         [(s["node"], _h(s["path_secret"])) for s in e["path_secrets"]])
            for e in self.case["leaves_private"]
        }
        self.signature_keys = {e["index"]: _h(e["signature_priv"]) for e in self.case["leaves_private"]}
        entry = self.case["update_paths"][0]
        self.sender: int = entry["sender"]
        self.path = UpdatePath.decode(_h(entry["update_path"]))

    def context(self, tree: RatchetTree) -> bytes:
        return GroupContext(ProtocolVersion.MLS10, 1, self.group_id, self.case["epoch"], tree.tree_hash(),
                            _h(self.case["confirmed_transcript_hash"]), ()).encode()

    def resign(self, leaf: LeafNode, signer: int, index: int) -> LeafNode:
        return dataclasses.replace(leaf, signature=CS.sign_with_label(self.signature_keys[signer], "LeafNodeTBS", leaf.tbs(self.group_id, index)))

    def with_node(self, path: UpdatePath, k: int, **changes: Any) -> UpdatePath:
        nodes = list(path.nodes)
        nodes[k] = dataclasses.replace(nodes[k], **changes)
        return dataclasses.replace(path, nodes=tuple(nodes))


@pytest.fixture(scope="module")
def group() -> Group:
    return Group()


def _fresh_key() -> bytes:
    return CS.derive_key_pair(os.urandom(32))[1]


def test_the_vector_path_is_accepted_and_decrypted(group: Group) -> None:
    merged = apply_update_path(group.tree, group.sender, group.path, group.group_id)
    receiver = next(j for j in group.privates if j != group.sender)
    private = group.privates[receiver].copy()
    _, commit_secret = decrypt_path(private, merged, group.sender, group.path, group.context(merged))
    assert commit_secret == _h(group.case["update_paths"][0]["commit_secret"])
    private.check(merged, complete=True)


def test_a_wrong_leaf_signature_is_rejected(group: Group) -> None:
    leaf = group.path.leaf_node
    bad = dataclasses.replace(group.path, leaf_node=dataclasses.replace(leaf, signature=bytes([leaf.signature[0] ^ 1]) + leaf.signature[1:]))
    with pytest.raises(MLSError, match="signature"):
        apply_update_path(group.tree, group.sender, bad, group.group_id)
    with pytest.raises(MLSError, match="signature"):  # the signature binds the group id
        apply_update_path(group.tree, group.sender, group.path, group.group_id + b"x")


@pytest.mark.parametrize("k", [0, -1])
def test_a_tampered_path_key_breaks_the_parent_hash_chain(group: Group, k: int) -> None:
    bad = group.with_node(group.path, k, encryption_key=_fresh_key())
    with pytest.raises(MLSError, match="parent hash"):
        apply_update_path(group.tree, group.sender, bad, group.group_id)


def test_a_wrong_number_of_path_nodes_is_rejected(group: Group) -> None:
    fewer = dataclasses.replace(group.path, nodes=group.path.nodes[:-1])
    extra = dataclasses.replace(group.path, nodes=group.path.nodes + (dataclasses.replace(group.path.nodes[-1], encryption_key=_fresh_key()),))
    for bad in (fewer, extra):
        with pytest.raises(MLSError, match="nodes"):
            apply_update_path(group.tree, group.sender, bad, group.group_id)
    merged = apply_update_path(group.tree, group.sender, group.path, group.group_id)
    receiver = next(j for j in group.privates if j != group.sender)
    with pytest.raises(MLSError, match="nodes"):
        decrypt_path(group.privates[receiver].copy(), merged, group.sender, extra, group.context(merged))


def test_a_leaf_that_is_not_from_a_commit_is_rejected(group: Group) -> None:
    leaf = dataclasses.replace(group.path.leaf_node, leaf_node_source=LeafNodeSource.UPDATE, parent_hash=None)
    bad = dataclasses.replace(group.path, leaf_node=group.resign(leaf, group.sender, group.sender))
    with pytest.raises(MLSError, match="source"):
        apply_update_path(group.tree, group.sender, bad, group.group_id)


def test_reused_keys_are_rejected(group: Group) -> None:
    old = group.tree.leaf(group.sender)
    assert old is not None
    same_key = group.resign(dataclasses.replace(group.path.leaf_node, encryption_key=old.encryption_key), group.sender, group.sender)
    with pytest.raises(MLSError, match="encryption key"):
        apply_update_path(group.tree, group.sender, dataclasses.replace(group.path, leaf_node=same_key), group.group_id)
    other = next(j for j in group.privates if j != group.sender)
    other_leaf = group.tree.leaf(other)
    assert other_leaf is not None
    copied = group.resign(dataclasses.replace(group.path.leaf_node, encryption_key=other_leaf.encryption_key), group.sender, group.sender)
    with pytest.raises(MLSError, match="already in the tree"):
        apply_update_path(group.tree, group.sender, dataclasses.replace(group.path, leaf_node=copied), group.group_id)
    stolen = group.resign(dataclasses.replace(group.path.leaf_node, signature_key=other_leaf.signature_key), other, group.sender)
    with pytest.raises(MLSError, match="signature key"):
        apply_update_path(group.tree, group.sender, dataclasses.replace(group.path, leaf_node=stolen), group.group_id)


def _receiver_at_root_split(group: Group) -> tuple[int, int]:
    """A receiver whose common ancestor with the sender is the root, and the root's path index."""
    root = tm.root(group.tree.n_leaves)
    fdp = group.tree.filtered_direct_path(group.sender)
    j = next(j for j in group.privates if j != group.sender and tm.common_ancestor(tm.leaf_to_node(j), tm.leaf_to_node(group.sender)) == root)
    return j, fdp.index(root)


def test_a_ciphertext_that_does_not_open_is_a_verify_error_and_changes_nothing(group: Group) -> None:
    merged = apply_update_path(group.tree, group.sender, group.path, group.group_id)
    gc = group.context(merged)
    j, k = _receiver_at_root_split(group)
    sent = group.path.nodes[k].encrypted_path_secret
    flipped = tuple(HPKECiphertext(c.kem_output, c.ciphertext[:-1] + bytes([c.ciphertext[-1] ^ 1])) for c in sent)
    garbage = tuple(HPKECiphertext(b"\x01", c.ciphertext) for c in sent)
    cases = [(group.with_node(group.path, k, encrypted_path_secret=flipped), gc),
             (group.with_node(group.path, k, encrypted_path_secret=garbage), gc),
             (group.path, group.context(group.tree))]  # the old tree hash in the context
    for bad, context in cases:
        private = group.privates[j].copy()
        before = dict(private.path_keys)
        with pytest.raises(VerifyError):
            decrypt_path(private, merged, group.sender, bad, context)
        assert private.path_keys == before


def test_a_path_secret_that_does_not_give_the_sent_keys_is_rejected(group: Group) -> None:
    """A committer that encrypts a secret other than the one behind its public keys: the path is
    parent-hash valid and signed, the ciphertext opens, the derived key is not the UpdatePath's."""
    merged = apply_update_path(group.tree, group.sender, group.path, group.group_id)
    gc = group.context(merged)
    j, k = _receiver_at_root_split(group)
    fdp = merged.filtered_direct_path(group.sender)
    resolution = merged.resolution(tm.right(fdp[k]) if tm.leaf_to_node(group.sender) < fdp[k] else tm.left(fdp[k]))
    lie = os.urandom(32)
    cts = tuple(HPKECiphertext(*CS.encrypt_with_label(merged.nodes[r].encryption_key, UPDATE_PATH_LABEL, gc, lie))  # type: ignore[union-attr]
                for r in resolution)
    bad = group.with_node(group.path, k, encrypted_path_secret=cts)
    assert apply_update_path(group.tree, group.sender, bad, group.group_id) == merged
    private = group.privates[j].copy()
    before = dict(private.path_keys)
    with pytest.raises(MLSError, match="public key"):
        decrypt_path(private, merged, group.sender, bad, gc)
    assert private.path_keys == before


def test_a_private_state_that_does_not_match_the_tree_is_refused(group: Group) -> None:
    j = next(iter(group.privates))
    private = group.privates[j].copy()
    private.check(group.tree)
    node = max(private.path_keys)
    private.path_keys[node] = CS.derive_key_pair(os.urandom(32))[0]
    with pytest.raises(MLSError, match=f"node {node}"):
        private.check(group.tree)
    blank = tm.parent(tm.leaf_to_node(2), group.tree.n_leaves)
    assert group.tree.nodes[blank] is None
    private = TreeKEMPrivate(CS, 2, group.privates[2].leaf_private, {blank: CS.derive_key_pair(os.urandom(32))[0]})
    with pytest.raises(MLSError, match="blank"):
        private.check(group.tree)
    with pytest.raises(MLSError, match="not an HPKE private key"):
        TreeKEMPrivate(CS, j, b"short").check(group.tree)
    assert group.privates[j].leaf_private.hex() not in repr(group.privates[j])


def test_a_receiver_without_a_key_for_the_resolution_is_refused(group: Group) -> None:
    merged = apply_update_path(group.tree, group.sender, group.path, group.group_id)
    j, _ = _receiver_at_root_split(group)
    stranger = TreeKEMPrivate(CS, j, CS.derive_key_pair(os.urandom(32))[0])
    with pytest.raises(MLSError, match="no private key"):
        decrypt_path(stranger, merged, group.sender, group.path, group.context(merged))
    with pytest.raises(MLSError, match="own path"):
        decrypt_path(group.privates[group.sender].copy(), merged, group.sender, group.path, group.context(merged))


def _new_member(group: Group) -> tuple[LeafNode, bytes]:
    leaf = group.tree.leaf(0)
    assert leaf is not None
    priv, pub = CS.derive_key_pair(os.urandom(32))
    sig_priv, sig_pub = CS.signature_keypair()
    kp_leaf = dataclasses.replace(leaf, encryption_key=pub, signature_key=sig_pub, leaf_node_source=LeafNodeSource.KEY_PACKAGE,
                                  lifetime=Lifetime(0, 2**64 - 1), parent_hash=None)
    return dataclasses.replace(kp_leaf, signature=CS.sign_with_label(sig_priv, "LeafNodeTBS", kp_leaf.tbs())), priv


def test_leaves_added_by_the_commit_are_left_out_and_join_by_the_welcome(group: Group) -> None:
    tree = group.tree.copy()
    leaf, leaf_priv = _new_member(group)
    added = tree.add(leaf)
    assert added == 3
    committer = 0
    created = create_update_path(tree, committer, group.signature_keys[committer], group.group_id, group.context,
                                 excluded=[added], leaf_secret=b"\x07" * 32)
    x = tm.leaf_to_node(committer)
    for p, node in zip(tree.filtered_direct_path(committer), created.update_path.nodes):
        copath = tm.right(p) if x < p else tm.left(p)
        assert len(node.encrypted_path_secret) == len([r for r in tree.resolution(copath) if r != tm.leaf_to_node(added)])
    merged = apply_update_path(tree, committer, created.update_path, group.group_id)
    assert merged == created.tree
    gc = group.context(merged)
    for j, private in group.privates.items():
        if j == committer:
            continue
        mine = private.copy()
        assert decrypt_path(mine, merged, committer, created.update_path, gc, excluded=[added])[1] == created.commit_secret
        mine.check(merged, complete=True)
    neighbour = group.privates[2].copy()  # its copath resolution held the new leaf
    with pytest.raises(MLSError, match="ciphertexts"):
        decrypt_path(neighbour, merged, committer, created.update_path, gc)
    joiner = TreeKEMPrivate.from_welcome(merged, added, leaf_priv, committer, created.path_secret_for(added))
    assert set(joiner.path_keys) == set(tree.filtered_direct_path(committer)) & set(tm.direct_path(tm.leaf_to_node(added), 8))
    with pytest.raises(MLSError):
        TreeKEMPrivate.from_welcome(merged, added, leaf_priv, committer, os.urandom(32))
    assert created.commit_secret.hex() not in repr(created)
