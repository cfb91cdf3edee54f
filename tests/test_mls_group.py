"""MLS groups in one process (issue 14): members created, added by Welcome, removed, leaving by a
Remove proposal, group context extensions, concurrent commits for one epoch, and the attacks a
member or relay can make on commits: a wrong confirmation tag, a removed member keeping its old
state, a commit from another group or epoch. Every failure leaves the receiver's state as it was."""

from __future__ import annotations

import pytest

from bridge.mls import framing
from bridge.mls.errors import MLSError, VerifyError
from bridge.mls.group import PAST_EPOCHS, GroupState, KeyPackageSecrets, Removed, create, join, new_key_package
from bridge.mls.messages import Extension, MLSMessage
from bridge.mls.suite import suite

CS = suite(3)
GID = b"parley-test-group"


def member(name: str) -> KeyPackageSecrets:
    return new_key_package(CS, name.encode(), CS.signature_keypair()[0])


def joined(welcome: bytes, kp: KeyPackageSecrets) -> GroupState:
    w = MLSMessage.decode(welcome).body
    return join(CS, w, kp.key_package, init_priv=kp.init_priv, encryption_priv=kp.encryption_priv, signature_priv=kp.signature_priv)  # type: ignore[arg-type]


def trio() -> tuple[GroupState, GroupState, GroupState]:
    b, c = member("bob"), member("carol")
    r = create(CS, GID, member("alice")).commit(add=(b.key_package, c.key_package))
    assert r.welcome is not None and r.added == (1, 2)
    return r.state, joined(r.welcome, b), joined(r.welcome, c)


def same_epoch(*states: GroupState) -> None:
    assert len({s.epoch_authenticator() for s in states}) == 1
    assert len({s.context.encode() for s in states}) == 1


def test_members_join_talk_and_agree() -> None:
    a, b, c = trio()
    same_epoch(a, b, c)
    m = a.encrypt(b"hello group")
    assert b"hello group" not in m
    assert b.receive(m).content.application_data == c.receive(m).content.application_data == b"hello group"
    r = b.commit()  # a self-update: new keys on bob's path
    a.receive(r.message)
    c.receive(r.message)
    b = r.state
    same_epoch(a, b, c)
    assert c.receive(b.encrypt(b"after the update")).content.application_data == b"after the update"


def test_a_removed_member_gets_nothing_new_even_with_its_old_state() -> None:
    a, b, c = trio()
    r = a.commit(remove=(c.own_leaf,))
    b.receive(r.message)
    with pytest.raises(Removed):
        c.receive(r.message)
    a = r.state
    same_epoch(a, b)
    secret = a.encrypt(b"carol must not read this")
    assert b.receive(secret).content.application_data == b"carol must not read this"
    # carol's old state, told the epoch moved on, still has only the old epoch's secrets
    c.context = c.context.__class__(**{**c.context.__dict__, "epoch": a.epoch})
    with pytest.raises((VerifyError, MLSError)):
        c.receive(secret)


def test_leaving_is_a_remove_proposal_that_another_member_commits() -> None:
    a, b, c = trio()
    leave = c.propose_remove(c.own_leaf)
    a.receive(leave)
    b.receive(leave)
    r = a.commit()  # the next commit takes the proposals received in the epoch, by reference
    b.receive(r.message)
    with pytest.raises(Removed):
        c.receive(r.message)
    same_epoch(r.state, b)
    assert [i for i, _ in r.state.tree.leaves()] == [0, 1]
    # a proposal to remove the committer itself is left out of its own commit, not committed
    a2, b2 = r.state, b
    b2_leaves = b2.propose_remove(a2.own_leaf)
    a2.receive(b2_leaves)
    r2 = a2.commit()
    b2.receive(r2.message)
    assert [i for i, _ in b2.tree.leaves()] == [0, 1]


def test_group_context_extensions_reach_every_member() -> None:
    a, b, c = trio()
    ext = (Extension(0xF0A0, b"announce-only"),)
    r = a.commit(extensions=ext)
    b.receive(r.message)
    c.receive(r.message)
    assert r.state.context.extensions == b.context.extensions == c.context.extensions == ext
    same_epoch(r.state, b, c)


def test_a_commit_with_a_wrong_confirmation_tag_is_refused_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = trio()
    before = b.context
    with monkeypatch.context() as mp:
        mp.setattr(framing, "confirmation_tag", lambda cs, key, confirmed: bytes(32))
        forged = a.commit()
    with pytest.raises(MLSError, match="confirmation tag"):
        b.receive(forged.message)
    assert b.context == before
    honest = a.commit()
    b.receive(honest.message)
    same_epoch(honest.state, b)


def test_two_commits_for_one_epoch_the_first_wins_and_the_second_is_made_again() -> None:
    a, b, c = trio()
    d, e = member("dave"), member("erin")
    first = a.commit(add=(d.key_package,))
    second = b.commit(add=(e.key_package,))  # made concurrently, for the same epoch
    # the delivery service accepted a's first: everyone applies it, b drops its own
    for s in (b, c):
        s.receive(first.message)
    a = first.state
    with pytest.raises(MLSError, match="epoch"):
        c.receive(second.message)  # for an epoch that is over
    retried = b.commit(add=(e.key_package,))  # b makes its commit again on the new epoch
    for s in (a, c):
        s.receive(retried.message)
    b = retried.state
    dave = joined(first.welcome, d)  # type: ignore[arg-type]
    dave.receive(retried.message)
    erin = joined(retried.welcome, e)  # type: ignore[arg-type]
    same_epoch(a, b, c, dave, erin)
    assert {leaf.credential.identity for _, leaf in a.tree.leaves()} == {b"alice", b"bob", b"carol", b"dave", b"erin"}


def test_messages_of_another_group_or_of_an_epoch_past_the_window_are_refused() -> None:
    a, b, c = trio()
    other = create(CS, b"another-group", member("mallory"))
    with pytest.raises(MLSError, match="another group or epoch"):
        b.receive(other.encrypt(b"x"))
    late = a.encrypt(b"sent in epoch 1, read after the commit")
    late_proposal = c.propose_remove(c.own_leaf)  # delivered to b only after the next commit
    r = a.commit()
    b.receive(r.message)
    a = r.state
    assert b.receive(late).content.application_data == b"sent in epoch 1, read after the commit"
    with pytest.raises(MLSError, match="past epoch"):
        b.receive(late_proposal)  # handshake messages of a past epoch are not applied
    in_time, too_late = a.encrypt(b"sent in epoch 2"), a.encrypt(b"sent in epoch 2, read too late")
    for _ in range(PAST_EPOCHS):
        r = a.commit()
        b.receive(r.message)
        a = r.state
    assert b.receive(in_time).content.application_data == b"sent in epoch 2"  # PAST_EPOCHS epochs later
    r = a.commit()
    b.receive(r.message)
    assert 2 not in b.past  # one more epoch: its secrets are deleted
    with pytest.raises(MLSError, match="another group or epoch"):
        b.receive(too_late)


def test_a_stored_state_continues_the_group_and_keeps_no_spent_secret() -> None:
    a, b, c = trio()
    stored = b.to_bytes()
    for spent in (b.secrets.joiner_secret, b.secrets.epoch_secret, b.secrets.welcome_secret):
        assert spent not in stored
    b = GroupState.from_bytes(stored)
    m = a.encrypt(b"to the restored state")
    assert b.receive(m).content.application_data == b"to the restored state"
    r = GroupState.from_bytes(c.to_bytes()).commit(add=(member("dave").key_package,))
    for s in (a, b):
        s.receive(r.message)
    a, b = GroupState.from_bytes(a.to_bytes()), GroupState.from_bytes(b.to_bytes())
    same_epoch(a, b, r.state)
    assert a.to_bytes() == GroupState.from_bytes(a.to_bytes()).to_bytes()
    with pytest.raises(MLSError):
        GroupState.from_bytes(stored[:-3])
    with pytest.raises(MLSError):
        GroupState.from_bytes(b"\x81\x02")  # another format


def test_a_key_package_not_signed_by_its_leaf_is_not_added() -> None:
    import dataclasses

    a, _, _ = trio()
    kp = member("dave").key_package
    bad = dataclasses.replace(kp, signature=kp.signature[:-1] + bytes([kp.signature[-1] ^ 1]))
    with pytest.raises(MLSError, match="not validly signed"):
        a.commit(add=(bad,))
    other_suite = new_key_package(suite(1), b"erin", CS.signature_keypair()[0]).key_package
    with pytest.raises(MLSError, match="another cipher suite"):
        a.commit(add=(other_suite,))


def test_every_leaf_that_joins_or_changes_passes_the_applications_check() -> None:
    """The hook Parley uses to check a leaf's installation against its wallet's identity log."""
    seen: list[bytes] = []

    def no_mallory(leaf) -> None:  # type: ignore[no-untyped-def]
        seen.append(leaf.credential.identity)
        if leaf.credential.identity == b"mallory":
            raise MLSError("mallory's installation is revoked")

    mallory = member("mallory")
    a = create(CS, GID, member("alice"), check_leaf=no_mallory)
    with pytest.raises(MLSError, match="revoked"):
        a.commit(add=(mallory.key_package,))
    b = member("bob")
    r = a.commit(add=(b.key_package,))
    a = r.state
    assert b"bob" in seen and b"alice" not in seen  # our own leaf is ours
    bob = joined(r.welcome, b)  # type: ignore[arg-type]  # bob checks nothing
    sneaky = bob.commit(add=(mallory.key_package,))
    before = a.context
    with pytest.raises(MLSError, match="revoked"):
        a.receive(sneaky.message)  # a member adding a refused installation: the commit is refused
    assert a.context == before
    w = MLSMessage.decode(sneaky.welcome).body  # type: ignore[arg-type]
    carol = member("carol")
    r2 = GroupState.from_bytes(bob.to_bytes()).commit(add=(carol.key_package,))  # a tree without mallory
    with pytest.raises(MLSError, match="revoked"):  # joining a tree that holds a refused leaf
        join(CS, w, mallory.key_package, init_priv=mallory.init_priv, encryption_priv=mallory.encryption_priv,
             signature_priv=mallory.signature_priv, check_leaf=no_mallory)
    joined_ok = join(CS, MLSMessage.decode(r2.welcome).body, carol.key_package, init_priv=carol.init_priv,  # type: ignore[arg-type]
                     encryption_priv=carol.encryption_priv, signature_priv=carol.signature_priv, check_leaf=no_mallory)
    assert joined_ok.check_leaf is no_mallory
    seen.clear()
    upd = bob.commit()  # bob's new leaf on his path is checked by those who check
    a.receive(upd.message)
    assert seen == [b"bob"]


def _update_proposal(state: GroupState, identity: bytes) -> bytes:
    """A member's Update proposal with a fresh leaf naming ``identity`` (what a client would send)."""
    import dataclasses

    from bridge.mls import messages as M
    from bridge.mls.messages import ContentType, FramedContent, LeafNodeSource, Sender, WireFormat

    old = state.tree.leaf(state.own_leaf)
    assert old is not None
    leaf = dataclasses.replace(old, encryption_key=CS.hpke_keypair()[1], credential=M.Credential.basic(identity),
                               leaf_node_source=LeafNodeSource.UPDATE, lifetime=None, signature=b"")
    leaf = dataclasses.replace(leaf, signature=CS.sign_with_label(state.signature_priv, "LeafNodeTBS", leaf.tbs(state.group_id, state.own_leaf)))
    content = FramedContent(state.group_id, state.epoch, Sender.member(state.own_leaf), b"", ContentType.PROPOSAL,
                            proposal=M.Proposal(M.Update(leaf)))
    ac = framing.sign(CS, WireFormat.PRIVATE_MESSAGE, content, state.signature_priv, state.context.encode())
    return MLSMessage(framing.protect_private(CS, ac, state.secret_tree, state.secrets.sender_data_secret)).encode()


def test_an_update_to_a_refused_credential_is_refused_at_the_commit() -> None:
    def no_mallory(leaf) -> None:  # type: ignore[no-untyped-def]
        if leaf.credential.identity == b"mallory":
            raise MLSError("not bob's installation")

    a, b, c = trio()
    c.check_leaf = no_mallory
    upd = _update_proposal(b, b"mallory")
    a.receive(upd)
    c.receive(upd)
    r = a.commit()  # a commits b's Update by reference
    with pytest.raises(MLSError, match="not bob's installation"):
        c.receive(r.message)
    a, b, c = trio()
    c.check_leaf = no_mallory
    fine = _update_proposal(b, b"bob")
    a.receive(fine)
    c.receive(fine)
    r = a.commit()
    c.receive(r.message)
    same_epoch(r.state, c)
    assert c.tree.leaf(b.own_leaf).leaf_node_source == 2  # type: ignore[union-attr]  # bob's leaf is the update's


def test_mutated_group_messages_fail_with_mls_errors_and_change_nothing() -> None:
    """A hostile relay flipping bytes: each mutation of a commit, a proposal or an application
    message fails with an MLS or decoding error (never another exception), and the group goes on."""
    import random

    from bridge.mls.tls import DecodeError

    a, b, c = trio()
    rng = random.Random(14)
    originals = [a.commit(add=(member("dave").key_package,)).message, a.propose_remove(c.own_leaf), a.encrypt(b"hello")]
    context, tree = b.context, b.tree.encode()
    for data in originals:
        for _ in range(120):
            m = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                m[rng.randrange(len(m))] = rng.randrange(256)
            if bytes(m) == data:
                continue
            with pytest.raises((MLSError, DecodeError)):
                b.receive(bytes(m))
        for cut in (0, 1, len(data) // 2, len(data) - 1):
            with pytest.raises((MLSError, DecodeError)):
                b.receive(data[:cut])
    assert b.context == context and b.tree.encode() == tree
    b.receive(originals[2])  # the genuine ones still work after all that
    b.receive(originals[1])
    r = a.commit()  # it commits its proposal by reference
    b.receive(r.message)
    same_epoch(r.state, b)
