"""A member's view of one MLS group (RFC 9420 §8, §11, §12).

:class:`GroupState` holds one epoch: the GroupContext, the ratchet tree, our leaf and the private
keys on our path (TreeKEM), the epoch's secrets, the secret tree, the interim transcript hash,
the proposals received in this epoch (by reference), the resumption PSKs of recent epochs, and
what reading a late application message of the last ``PAST_EPOCHS`` epochs needs.

* :func:`new_key_package`, :func:`create` - a key package naming our installation; a new group.
* :func:`join` - §12.4.3.1: open the Welcome, take the ratchet tree (given, or the GroupInfo's
  ``ratchet_tree`` extension), check it (tree hash, parent hashes, every leaf's signature and the
  application's ``check_leaf``), find our leaf, and start the key schedule from the joiner secret.
* :meth:`GroupState.receive` - unprotect a PublicMessage or PrivateMessage; a proposal is kept for
  a later commit, a commit moves the group to the next epoch (§12.4.2): proposals applied in the
  order §12.3 fixes, the UpdatePath merged and decrypted, the transcript hashes, the key schedule
  with the PSKs named, and the confirmation tag checked.
* :meth:`GroupState.commit`, :meth:`~GroupState.encrypt`, :meth:`~GroupState.propose_remove` - our
  own commits (with the Welcome for those added), application messages, and leaving.
* :meth:`GroupState.to_bytes` / :meth:`~GroupState.from_bytes` - the state for encrypted storage.

Everything received is hostile until it has passed these checks: failures raise
:class:`~bridge.mls.errors.MLSError` (or VerifyError, DecodeError) and leave the state as it was.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.mls import framing
from bridge.mls import key_schedule as ks
from bridge.mls import messages as M
from bridge.mls.checks import expect
from bridge.mls.errors import MLSError
from bridge.mls.messages import (
    AuthenticatedContent, ContentType, ExtensionType, FramedContent, GroupContext, KeyPackage, LeafNodeSource, MLSMessage,
    PreSharedKeyID, PrivateMessage, PSKType, PublicMessage, Sender, SenderType, Welcome, WireFormat,
)
from bridge.mls.suite import CipherSuite, suite
from bridge.mls.tree import RatchetTree
from bridge.mls.welcome import open_welcome

__all__ = [
    "GroupState", "Committed", "Removed", "PastEpoch", "LeafCheck", "accept_any_leaf", "KeyPackageSecrets", "new_key_package",
    "create", "join", "check_passive_client", "PAST_EPOCHS", "RESUMPTION_WINDOW", "STATE_FORMAT",
]

#: Past epochs whose resumption PSK is kept (for PSK proposals naming them).
RESUMPTION_WINDOW = 8
#: Past epochs whose application messages can still be read (late arrivals; XMTP keeps 3). Older
#: epochs' secrets are deleted.
PAST_EPOCHS = 3
#: The format of :meth:`GroupState.to_bytes`.
STATE_FORMAT = 1


#: Checks a member's leaf against what the application knows of its credential (for Parley: the
#: installation it names is active in its wallet's identity log, and signs with the leaf's key).
#: Raises MLSError to refuse it.
LeafCheck = Callable[[M.LeafNode], None]


def accept_any_leaf(leaf: M.LeafNode) -> None:
    """The default :data:`LeafCheck`: MLS's own checks only (signatures, key packages)."""


@dataclass
class PastEpoch:
    """What reading a late application message of a past epoch needs: that epoch's GroupContext
    (encoded), sender-data secret, secret tree and the members' signature keys by leaf."""

    context: bytes
    sender_data_secret: bytes = field(repr=False)
    secret_tree: ks.SecretTree = field(repr=False)
    signature_keys: dict[int, bytes] = field(default_factory=dict)


class Removed(MLSError):
    """The commit removed us from the group: it has no next epoch for us."""


@dataclass(frozen=True)
class Committed:
    """A commit we made: the message to send, the Welcome for the members it adds (None when it adds
    nobody), and the state of the next epoch, to use once the delivery service has accepted the
    commit (another commit for the same epoch may win: then this one is dropped and made again)."""

    message: bytes
    welcome: bytes | None
    state: GroupState
    added: tuple[int, ...]


@dataclass
class GroupState:
    """One member's state of one group in one epoch. A received commit or our own (once accepted)
    gives the next epoch's state; nothing is changed by a message that fails its checks."""

    cs: CipherSuite
    context: GroupContext
    tree: RatchetTree
    own_leaf: int
    signature_priv: bytes = field(repr=False)
    private: Any = field(repr=False)  # bridge.mls.treekem.TreeKEMPrivate
    secrets: ks.EpochSecrets = field(repr=False)
    secret_tree: ks.SecretTree = field(repr=False)
    interim_transcript_hash: bytes
    proposals: dict[bytes, AuthenticatedContent] = field(default_factory=dict)
    resumption_psks: dict[tuple[bytes, int], bytes] = field(default_factory=dict, repr=False)
    external_psks: Mapping[bytes, bytes] = field(default_factory=dict, repr=False)
    past: dict[int, PastEpoch] = field(default_factory=dict, repr=False)
    #: Run on every leaf that joins or changes: each added key package's, each Update's, each
    #: committer's new leaf, and every leaf of the tree we join. Not stored: set it after from_bytes.
    check_leaf: LeafCheck = field(default=accept_any_leaf, repr=False, compare=False)

    @property
    def epoch(self) -> int:
        return self.context.epoch

    @property
    def group_id(self) -> bytes:
        return self.context.group_id

    def epoch_authenticator(self) -> bytes:
        return self.secrets.epoch_authenticator

    def _signature_key(self, leaf: int) -> bytes | None:
        node = self.tree.leaf(leaf)
        return node.signature_key if node is not None else None

    # --- receiving --------------------------------------------------------------------------------

    def unprotect(self, message: MLSMessage) -> AuthenticatedContent:
        """Check and open a message of this epoch from a member.

        Raises:
            MLSError: another group or epoch, not from a member, a failed check."""
        body = message.body
        if not isinstance(body, (PublicMessage, PrivateMessage)):
            raise MLSError("not a group message")
        group_id = body.content.group_id if isinstance(body, PublicMessage) else body.group_id
        epoch = body.content.epoch if isinstance(body, PublicMessage) else body.epoch
        if group_id != self.group_id or (epoch != self.epoch and not (isinstance(body, PrivateMessage) and epoch in self.past)):
            raise MLSError(f"a message of epoch {epoch} of another group or epoch (this is epoch {self.epoch})")
        if epoch != self.epoch:  # a late message of a past epoch: application data only
            if body.content_type != ContentType.APPLICATION:
                raise MLSError(f"a proposal or commit of past epoch {epoch}")
            old = self.past[epoch]
            return framing.unprotect_private(self.cs, body, old.secret_tree, old.sender_data_secret, old.context, old.signature_keys.get)
        gc = self.context.encode()
        if isinstance(body, PublicMessage):
            sender = body.content.sender
            if sender.sender_type != SenderType.MEMBER or sender.leaf_index is None:
                raise MLSError(f"a {sender.sender_type.name.lower()} sender: only members are followed here")
            key = self._signature_key(sender.leaf_index)
            if key is None:
                raise MLSError(f"no member at leaf {sender.leaf_index}")
            return framing.unprotect_public(self.cs, body, self.secrets.membership_key, gc, key)
        return framing.unprotect_private(self.cs, body, self.secret_tree, self.secrets.sender_data_secret, gc, self._signature_key)

    def receive(self, message: MLSMessage | bytes) -> AuthenticatedContent:
        """A message of the group: a proposal is kept, a commit is applied (this state moves to the
        next epoch); application data is returned for the caller to show. On any failure the state
        is unchanged.

        Raises:
            MLSError (Removed when the commit removes us), VerifyError, DecodeError."""
        msg = MLSMessage.decode(message) if isinstance(message, (bytes, bytearray)) else message
        ac = self.unprotect(msg)
        if ac.content.content_type == ContentType.PROPOSAL:
            self.proposals[ac.ref(self.cs)] = ac
        elif ac.content.content_type == ContentType.COMMIT:
            nxt = self._after_commit(ac)
            self.__dict__.update(nxt.__dict__)
        return ac

    # --- storage --------------------------------------------------------------------------------------

    #: The epoch secrets kept at rest: the others (joiner, welcome, epoch, encryption secrets) have
    #: done their work once the epoch's secret tree exists, and are not stored (forward secrecy).
    _KEPT = ("sender_data_secret", "exporter_secret", "external_secret", "confirmation_key", "membership_key",
             "resumption_psk", "epoch_authenticator", "init_secret")

    def to_bytes(self) -> bytes:
        """The whole state as canonical CBOR, secrets included: the caller encrypts it at rest (as
        the 1:1 ratchet state is)."""
        from bridge.protocol import wire

        priv = self.private
        return wire.encode([
            STATE_FORMAT, self.cs.id, self.context.encode(), self.tree.encode(), self.own_leaf, self.signature_priv,
            [priv.leaf_index, priv.leaf_private, [[x, k] for x, k in sorted(priv.path_keys.items())]],
            [getattr(self.secrets, name) for name in self._KEPT], self.secret_tree.state(), self.interim_transcript_hash,
            [[ref, ac.encode()] for ref, ac in sorted(self.proposals.items())],
            [[gid, e, psk] for (gid, e), psk in sorted(self.resumption_psks.items())],
            [[k, v] for k, v in sorted(self.external_psks.items())],
            [[e, pe.context, pe.sender_data_secret, pe.secret_tree.state(), [[i, key] for i, key in sorted(pe.signature_keys.items())]]
             for e, pe in sorted(self.past.items())],
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupState:
        """Raises:
        MLSError: not a state :meth:`to_bytes` wrote (or of a newer format); DecodeError."""
        from bridge.mls import treekem
        from bridge.protocol import wire

        try:
            (fmt, suite_id, context, tree, own_leaf, signature_priv, priv, kept, secret_tree, interim, proposals, resumption,
             external, past) = wire.decode(data)
            if fmt != STATE_FORMAT:
                raise MLSError(f"a group state of format {fmt!r}: this Parley reads format {STATE_FORMAT}")
            cs = suite(suite_id)
            leaf_index, leaf_private, path_keys = priv
            values = dict(zip(cls._KEPT, kept, strict=True))
            secrets = ks.EpochSecrets(**{f: values.get(f, b"") for f in ks.EpochSecrets.__dataclass_fields__})
            state = cls(
                cs, GroupContext.decode(context), RatchetTree.decode(cs, tree), own_leaf, signature_priv,
                treekem.TreeKEMPrivate(cs, leaf_index, leaf_private, {x: k for x, k in path_keys}), secrets,
                ks.SecretTree.from_state(cs, secret_tree), interim,
                {ref: AuthenticatedContent.decode(ac) for ref, ac in proposals},
                {(gid, e): psk for gid, e, psk in resumption}, {k: v for k, v in external},
                {e: PastEpoch(ctx, sds, ks.SecretTree.from_state(cs, st), {i: key for i, key in keys}) for e, ctx, sds, st, keys in past},
            )
        except (TypeError, ValueError) as exc:  # wrong shapes (the DecodeError of malformed bytes is a ValueError too)
            raise MLSError(f"a stored group state is malformed: {exc}") from None
        if state.tree.leaf(own_leaf) is None:
            raise MLSError("a stored group state whose own leaf is blank")
        return state

    # --- our own messages (§12.4.1, §6.3) --------------------------------------------------------------

    def commit(self, *, add: tuple[KeyPackage, ...] = (), remove: tuple[int, ...] = (),
                extensions: tuple[M.Extension, ...] | None = None, authenticated_data: bytes = b"") -> Committed:
        """§12.4.1: a commit of our own (Add, Remove and GroupContextExtensions proposals by value, with
        an UpdatePath, so every commit also refreshes our keys), and the Welcome for the added members.

        Raises:
            MLSError: removing ourselves or a blank leaf, a key package of another suite or badly signed."""
        from bridge.mls import treekem

        cs = self.cs
        if self.own_leaf in remove:
            raise MLSError("a member cannot commit its own removal: it proposes it (leave), another member commits")
        for kp in add:
            if kp.cipher_suite != cs.id or not cs.verify_with_label(kp.leaf_node.signature_key, "KeyPackageTBS", kp.tbs(), kp.signature):
                raise MLSError("a key package of another cipher suite, or not validly signed")
        ours: list[M.Proposal] = []
        if extensions is not None:
            ours.append(M.Proposal(M.GroupContextExtensions(tuple(extensions))))
        ours += [M.Proposal(M.Remove(leaf)) for leaf in sorted(set(remove))]
        ours += [M.Proposal(M.Add(kp)) for kp in add]
        # The proposals received in this epoch go in by reference, but not one that removes us or
        # repeats a removal of ours (§12.2: a commit removes a leaf once), nor our own Update.
        pending: list[tuple[bytes, M.Proposal, int]] = []
        for ref, pac in self.proposals.items():
            prop, sender = pac.content.proposal, pac.content.sender.leaf_index
            if prop is None or sender is None:
                continue
            if isinstance(prop.body, M.Remove) and (prop.body.removed == self.own_leaf or prop.body.removed in remove):
                continue
            if isinstance(prop.body, M.Update) and sender == self.own_leaf:
                continue
            pending.append((ref, prop, sender))
        tree = self.tree.copy()
        new_extensions, _removed, added, _psks, _updated = self._apply(
            tree, [(prop, sender) for _, prop, sender in pending] + [(prop, self.own_leaf) for prop in ours], self.own_leaf)
        if _psks:
            raise MLSError("committing PSK proposals is not supported")
        proposals = [M.ProposalOrRef.by_reference(ref) for ref, _, _ in pending] + [M.ProposalOrRef.by_value(p) for p in ours]
        provisional = dict(version=self.context.version, cipher_suite=cs.id, group_id=self.group_id, epoch=self.epoch + 1,
                           confirmed_transcript_hash=self.context.confirmed_transcript_hash, extensions=new_extensions)
        created = treekem.create_update_path(tree, self.own_leaf, self.signature_priv, self.group_id,
                                             lambda t: GroupContext(tree_hash=t.tree_hash(), **provisional), excluded=added)
        tree = created.tree
        commit = M.Commit(tuple(proposals), created.update_path)
        content = FramedContent(self.group_id, self.epoch, Sender.member(self.own_leaf), authenticated_data, ContentType.COMMIT, commit=commit)
        old_gc = self.context.encode()
        signature = cs.sign_with_label(self.signature_priv, "FramedContentTBS",
                                       M.framed_content_tbs(WireFormat.PRIVATE_MESSAGE, content, old_gc))
        confirmed = cs.hash(self.interim_transcript_hash + M.confirmed_transcript_hash_input(WireFormat.PRIVATE_MESSAGE, content, signature))
        context = GroupContext(self.context.version, cs.id, self.group_id, self.epoch + 1, tree.tree_hash(), confirmed, new_extensions)
        secrets = ks.next_epoch(cs, self.secrets.init_secret, created.commit_secret, None, context)
        tag = framing.confirmation_tag(cs, secrets.confirmation_key, confirmed)
        ac = AuthenticatedContent(WireFormat.PRIVATE_MESSAGE, content, M.FramedContentAuthData(signature, tag))
        message = MLSMessage(framing.protect_private(cs, ac, self.secret_tree, self.secrets.sender_data_secret)).encode()
        welcome = None
        if added:
            info = M.GroupInfo(context, (M.Extension(ExtensionType.RATCHET_TREE, tree.encode()),), tag, self.own_leaf)
            info = dataclasses.replace(info, signature=cs.sign_with_label(self.signature_priv, "GroupInfoTBS", info.tbs()))
            key, nonce = ks.welcome_key_nonce(cs, ks.welcome_secret(cs, secrets.joiner_secret, None))
            encrypted_info = cs.seal(key, nonce, b"", info.encode())
            entries = []
            added_kps = [prop.body.key_package for _, prop, _ in pending if isinstance(prop.body, M.Add)] + list(add)
            for kp, leaf in zip(added_kps, added):
                secrets_for = M.GroupSecrets(secrets.joiner_secret, created.path_secret_for(leaf), ())
                kem_output, ct = cs.encrypt_with_label(kp.init_key, "Welcome", encrypted_info, secrets_for.encode())
                entries.append(M.EncryptedGroupSecrets(kp.ref(cs), M.HPKECiphertext(kem_output, ct)))
            welcome = MLSMessage(M.Welcome(cs.id, tuple(entries), encrypted_info)).encode()
        nxt = GroupState(cs, context, tree, self.own_leaf, self.signature_priv, created.private, secrets,
                         ks.SecretTree(cs, secrets.encryption_secret, tree.n_leaves),
                         framing.interim_transcript_hash(cs, confirmed, tag), {}, self._resumption_after(context.epoch, secrets),
                         self.external_psks,
                         self._past_after(), self.check_leaf)
        return Committed(message, welcome, nxt, tuple(added))

    def encrypt(self, plaintext: bytes, *, authenticated_data: bytes = b"", padding: int = 0) -> bytes:
        """An application message of this epoch (a PrivateMessage, §6.3): one envelope for the whole group."""
        content = FramedContent(self.group_id, self.epoch, Sender.member(self.own_leaf), authenticated_data, ContentType.APPLICATION,
                                application_data=plaintext)
        ac = framing.sign(self.cs, WireFormat.PRIVATE_MESSAGE, content, self.signature_priv, self.context.encode())
        return MLSMessage(framing.protect_private(self.cs, ac, self.secret_tree, self.secrets.sender_data_secret, padding=padding)).encode()

    def propose_remove(self, leaf: int) -> bytes:
        """A Remove proposal (a PrivateMessage) for another member to commit; ``leaf`` our own to leave."""
        content = FramedContent(self.group_id, self.epoch, Sender.member(self.own_leaf), b"", ContentType.PROPOSAL,
                                proposal=M.Proposal(M.Remove(leaf)))
        ac = framing.sign(self.cs, WireFormat.PRIVATE_MESSAGE, content, self.signature_priv, self.context.encode())
        self.proposals[ac.ref(self.cs)] = ac  # a commit by another member will name it
        return MLSMessage(framing.protect_private(self.cs, ac, self.secret_tree, self.secrets.sender_data_secret)).encode()

    # --- commits (§12.4.2) ------------------------------------------------------------------------------

    def _resumption_after(self, epoch: int, secrets: ks.EpochSecrets) -> dict[tuple[bytes, int], bytes]:
        """The resumption PSKs once ``epoch`` begins: its own added, the oldest beyond RESUMPTION_WINDOW gone."""
        resumption = dict(self.resumption_psks)
        resumption[(self.group_id, epoch)] = secrets.resumption_psk
        for key in sorted(resumption, key=lambda k: k[1])[:-RESUMPTION_WINDOW]:
            del resumption[key]
        return resumption

    def _past_after(self) -> dict[int, PastEpoch]:
        """The window of past epochs once this epoch is over (it joins; the oldest beyond PAST_EPOCHS go)."""
        past = dict(self.past)
        past[self.epoch] = PastEpoch(self.context.encode(), self.secrets.sender_data_secret, self.secret_tree,
                                     {i: leaf.signature_key for i, leaf in self.tree.leaves()})
        for e in sorted(past)[:-PAST_EPOCHS]:
            del past[e]
        return past

    def _resolve(self, commit: M.Commit, committer: int) -> list[tuple[M.Proposal, int]]:
        """The commit's proposals with their senders' leaves, references resolved."""
        out: list[tuple[M.Proposal, int]] = []
        for por in commit.proposals:
            if por.reference is not None:
                ac = self.proposals.get(por.reference)
                if ac is None or ac.content.proposal is None:
                    raise MLSError("the commit names a proposal this member did not receive")
                sender = ac.content.sender.leaf_index
                if sender is None:
                    raise MLSError("a proposal from outside the group")
                out.append((ac.content.proposal, sender))
            elif por.proposal is not None:
                out.append((por.proposal, committer))
        return out

    def _apply(self, tree: RatchetTree, proposals: list[tuple[M.Proposal, int]],
               committer: int) -> tuple[tuple[M.Extension, ...], list[int], list[int], list[PreSharedKeyID], bool]:
        """§12.3: apply a commit's proposals to ``tree`` in the RFC's order (group context extensions,
        updates, removes, adds; PSKs are only named). Returns (extensions, removed leaves, added leaves,
        PSK ids, whether any leaf was updated).

        Raises:
            MLSError: a proposal that is not valid for this group."""
        cs = self.cs
        by_type: dict[type, list[tuple[Any, int]]] = {}
        for p, sender in proposals:
            by_type.setdefault(type(p.body), []).append((p.body, sender))
        if by_type.get(M.ReInit) or by_type.get(M.ExternalInit):
            raise MLSError("ReInit and ExternalInit commits are not supported")
        extensions = self.context.extensions
        for body, _sender in by_type.get(M.GroupContextExtensions, []):
            extensions = tuple(body.extensions)
        for body, sender in by_type.get(M.Update, []):
            if sender == committer:
                raise MLSError("a committer cannot commit its own Update proposal")
            leaf = body.leaf_node
            if leaf.leaf_node_source != LeafNodeSource.UPDATE:
                raise MLSError("an Update's leaf must have the update source")
            if not cs.verify_with_label(leaf.signature_key, "LeafNodeTBS", leaf.tbs(self.group_id, sender), leaf.signature):
                raise MLSError(f"the Update of leaf {sender} is not signed by its leaf")
            self.check_leaf(leaf)
            tree.update(sender, leaf)
        removed = [body.removed for body, _ in by_type.get(M.Remove, [])]
        if len(set(removed)) != len(removed) or committer in removed:
            raise MLSError("a commit removes a member twice, or its own committer")
        for leaf_index in removed:
            tree.remove(leaf_index)
        added: list[int] = []
        for body, _sender in by_type.get(M.Add, []):
            kp = body.key_package
            if kp.cipher_suite != cs.id or not cs.verify_with_label(kp.leaf_node.signature_key, "KeyPackageTBS", kp.tbs(), kp.signature):
                raise MLSError("an added key package is not valid for this group")
            self.check_leaf(kp.leaf_node)
            added.append(tree.add(kp.leaf_node))
        psks = [body.psk for body, _ in by_type.get(M.PreSharedKey, [])]
        return extensions, removed, added, psks, bool(by_type.get(M.Update))

    def _psk(self, pid: PreSharedKeyID) -> bytes:
        if pid.psktype == PSKType.EXTERNAL:
            psk = self.external_psks.get(pid.psk_id or b"")
        else:
            psk = self.resumption_psks.get((pid.psk_group_id or b"", pid.psk_epoch if pid.psk_epoch is not None else -1))
        if psk is None:
            raise MLSError("the commit uses a pre-shared key this member does not have")
        return psk

    def _after_commit(self, ac: AuthenticatedContent) -> GroupState:
        from bridge.mls import treekem

        cs = self.cs
        commit = ac.content.commit
        committer = ac.content.sender.leaf_index
        if commit is None or committer is None or ac.auth.confirmation_tag is None:
            raise MLSError("not a member's commit")
        proposals = self._resolve(commit, committer)
        tree = self.tree.copy()
        extensions, removed, added, psks, updated = self._apply(tree, proposals, committer)
        if self.own_leaf in removed:
            raise Removed(f"the commit of epoch {self.epoch} removed us")
        private = self.private.copy()
        commit_secret = bytes(cs.nh)
        provisional = dict(version=self.context.version, cipher_suite=cs.id, group_id=self.group_id, epoch=self.epoch + 1,
                           confirmed_transcript_hash=self.context.confirmed_transcript_hash, extensions=tuple(extensions))
        if commit.path is not None:
            tree = treekem.apply_update_path(tree, committer, commit.path, self.group_id)
            self.check_leaf(commit.path.leaf_node)
            private.prune(tree)
            _, commit_secret = treekem.decrypt_path(private, tree, committer, commit.path,
                                                    GroupContext(tree_hash=tree.tree_hash(), **provisional), excluded=added)
        else:
            if updated or removed or not proposals or extensions != self.context.extensions:
                raise MLSError("this commit needs an UpdatePath")
            private.prune(tree)
        confirmed = framing.confirmed_transcript_hash(cs, self.interim_transcript_hash, ac)
        context = GroupContext(self.context.version, cs.id, self.group_id, self.epoch + 1, tree.tree_hash(), confirmed, tuple(extensions))
        psk_secret = ks.psk_secret(cs, [(pid, self._psk(pid)) for pid in psks])
        secrets = ks.next_epoch(cs, self.secrets.init_secret, commit_secret, psk_secret, context)
        if not cs.verify_mac(secrets.confirmation_key, confirmed, ac.auth.confirmation_tag):
            raise MLSError("the commit's confirmation tag does not verify")
        return GroupState(cs, context, tree, self.own_leaf, self.signature_priv, private, secrets,
                          ks.SecretTree(cs, secrets.encryption_secret, tree.n_leaves),
                          framing.interim_transcript_hash(cs, confirmed, ac.auth.confirmation_tag), {},
                          self._resumption_after(context.epoch, secrets), self.external_psks,
                          self._past_after(), self.check_leaf)


# --- the active side: key packages, creating a group, committing, sending ---------------------------

#: A key package's lifetime (§7.2): a week back (clock skew) to 90 days ahead.
KEY_PACKAGE_LIFETIME_S = 90 * 86_400


@dataclass(frozen=True)
class KeyPackageSecrets:
    """The private keys of one of our key packages: HPKE init key, leaf encryption key, signature key."""

    key_package: KeyPackage
    init_priv: bytes = field(repr=False)
    encryption_priv: bytes = field(repr=False)
    signature_priv: bytes = field(repr=False)


def new_key_package(cs: CipherSuite, identity: bytes, signature_priv: bytes, *, now: int | None = None) -> KeyPackageSecrets:
    """A key package (§10) with a basic credential naming ``identity`` (for Parley: the installation
    id, which the member checks against the wallet's identity log), signed with ``signature_priv``."""
    init_priv, init_pub = cs.hpke_keypair()
    enc_priv, enc_pub = cs.hpke_keypair()
    t = int(time.time()) if now is None else now
    caps = M.Capabilities(versions=(1,), cipher_suites=(cs.id,), extensions=(), proposals=(), credentials=(M.CredentialType.BASIC,))
    leaf = M.LeafNode(enc_pub, cs.signature_public(signature_priv), M.Credential.basic(identity), caps, LeafNodeSource.KEY_PACKAGE,
                      lifetime=M.Lifetime(t - 7 * 86_400, t + KEY_PACKAGE_LIFETIME_S))
    leaf = _signed_leaf(cs, leaf, signature_priv)
    kp = KeyPackage(1, cs.id, init_pub, leaf, ())
    kp = dataclasses.replace(kp, signature=cs.sign_with_label(signature_priv, "KeyPackageTBS", kp.tbs()))
    return KeyPackageSecrets(kp, init_priv, enc_priv, signature_priv)


def _signed_leaf(cs: CipherSuite, leaf: M.LeafNode, signature_priv: bytes, group_id: bytes | None = None, index: int | None = None) -> M.LeafNode:
    return dataclasses.replace(leaf, signature=cs.sign_with_label(signature_priv, "LeafNodeTBS", leaf.tbs(group_id, index)))


def create(cs: CipherSuite, group_id: bytes, own: KeyPackageSecrets, *, extensions: tuple[M.Extension, ...] = (),
           check_leaf: LeafCheck = accept_any_leaf) -> GroupState:
    """A new group (§11) with us as its only member, at epoch 0."""
    from bridge.mls import treekem

    tree = RatchetTree(cs, [own.key_package.leaf_node])
    context = GroupContext(1, cs.id, group_id, 0, tree.tree_hash(), b"", extensions)
    secrets = ks.next_epoch(cs, os.urandom(cs.nh), None, None, context)
    interim = framing.interim_transcript_hash(cs, b"", framing.confirmation_tag(cs, secrets.confirmation_key, b""))
    return GroupState(cs, context, tree, 0, own.signature_priv, treekem.TreeKEMPrivate(cs, 0, own.encryption_priv), secrets,
                      ks.SecretTree(cs, secrets.encryption_secret, 1), interim, {}, {(group_id, 0): secrets.resumption_psk}, {}, {}, check_leaf)


# --- joining (§12.4.3.1) ---------------------------------------------------------------------------


def join(cs: CipherSuite, welcome: Welcome, key_package: KeyPackage, *, init_priv: bytes, encryption_priv: bytes,
         signature_priv: bytes, ratchet_tree: bytes | None = None, external_psks: Mapping[bytes, bytes] | None = None,
         check_leaf: LeafCheck = accept_any_leaf) -> GroupState:
    """Join from ``welcome`` as the client of ``key_package`` (its three private keys given).

    Raises:
        MLSError: no tree, a tree that does not match the GroupInfo or fails its checks, our leaf not
        in it, a missing PSK; VerifyError, DecodeError."""
    from bridge.mls import treekem

    psks = dict(external_psks or {})
    holder: dict[str, RatchetTree] = {}

    def signer(info: M.GroupInfo) -> bytes | None:
        data = ratchet_tree
        if data is None:
            ext = [e for e in info.extensions if e.extension_type == ExtensionType.RATCHET_TREE]
            if len(ext) != 1:
                raise MLSError("no ratchet tree: neither given nor in the GroupInfo")
            data = ext[0].extension_data
        holder["tree"] = RatchetTree.decode(cs, data)
        leaf = holder["tree"].leaf(info.signer)
        return leaf.signature_key if leaf is not None else None

    def psk_lookup(pid: PreSharedKeyID) -> bytes | None:
        return psks.get(pid.psk_id or b"") if pid.psktype == PSKType.EXTERNAL else None

    opened = open_welcome(cs, welcome, key_package, init_priv, signer, psk_lookup)
    info, tree = opened.group_info, holder["tree"]
    gc = info.group_context
    if tree.tree_hash() != gc.tree_hash:
        raise MLSError("the ratchet tree does not match the GroupInfo's tree hash")
    if not tree.parent_hashes_valid():
        raise MLSError("the ratchet tree's parent hashes are not valid")
    if not tree.leaf_signatures_valid(gc.group_id):
        raise MLSError("a leaf of the ratchet tree is not validly signed")
    for _, leaf in tree.leaves():
        check_leaf(leaf)
    own = [i for i, leaf in tree.leaves() if leaf == key_package.leaf_node]
    if len(own) != 1:
        raise MLSError("our key package's leaf is not in the ratchet tree" if not own else "our leaf is in the tree twice")
    if cs.hpke_public(encryption_priv) != key_package.leaf_node.encryption_key:
        raise MLSError("the encryption key is not the key package's")
    path_secret = opened.group_secrets.path_secret
    if path_secret is None:
        private = treekem.TreeKEMPrivate(cs, own[0], encryption_priv)
        private.check(tree)
    else:
        private = treekem.TreeKEMPrivate.from_welcome(tree, own[0], encryption_priv, info.signer, path_secret)
    interim = framing.interim_transcript_hash(cs, gc.confirmed_transcript_hash, info.confirmation_tag)
    secrets = opened.epoch_secrets
    return GroupState(cs, gc, tree, own[0], signature_priv, private, secrets, ks.SecretTree(cs, secrets.encryption_secret, tree.n_leaves),
                      interim, {}, {(gc.group_id, gc.epoch): secrets.resumption_psk}, psks, {}, check_leaf)


# --- the working group's passive-client vectors ------------------------------------------------------


def check_passive_client(case: dict[str, Any]) -> None:
    """Join from the Welcome, then apply each epoch's commit (its proposals received first) and
    compare the epoch authenticators."""
    cs = suite(case["cipher_suite"])
    h = bytes.fromhex
    kp_msg = MLSMessage.decode(h(case["key_package"])).body
    welcome = MLSMessage.decode(h(case["welcome"])).body
    if not isinstance(kp_msg, KeyPackage) or not isinstance(welcome, Welcome):
        raise AssertionError("key_package / welcome of the wrong wire format")
    expect("signature key", cs.signature_public(h(case["signature_priv"])), kp_msg.leaf_node.signature_key)
    expect("encryption key", cs.hpke_public(h(case["encryption_priv"])), kp_msg.leaf_node.encryption_key)
    expect("init key", cs.hpke_public(h(case["init_priv"])), kp_msg.init_key)
    state = join(cs, welcome, kp_msg, init_priv=h(case["init_priv"]), encryption_priv=h(case["encryption_priv"]),
                 signature_priv=h(case["signature_priv"]), ratchet_tree=h(case["ratchet_tree"]) if case["ratchet_tree"] else None,
                 external_psks={h(p["psk_id"]): h(p["psk"]) for p in case["external_psks"]})
    expect("initial epoch_authenticator", state.epoch_authenticator(), h(case["initial_epoch_authenticator"]))
    for i, ep in enumerate(case["epochs"]):
        for p in ep["proposals"]:
            state.receive(h(p))
        state.receive(h(ep["commit"]))
        expect(f"epoch {i}: epoch_authenticator", state.epoch_authenticator(), h(ep["epoch_authenticator"]))


