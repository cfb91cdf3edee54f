"""The wire structures of RFC 9420 (MLS), with strict decoding.

* §5.3 Credential; §5.2 the KeyPackage and proposal references (``RefHash``)
* §6 MLSMessage, Sender, FramedContent; §6.1 FramedContentAuthData, AuthenticatedContent and the
  FramedContentTBS bytes; §6.2 PublicMessage (and AuthenticatedContentTBM); §6.3 PrivateMessage,
  PrivateMessageContent, PrivateContentAAD, SenderData, SenderDataAAD
* §7.1 ParentNode; §7.2 Capabilities, Lifetime, Extension, LeafNode (and LeafNodeTBS); §7.6
  HPKECiphertext, UpdatePathNode, UpdatePath; §7.8 Node
* §8.1 GroupContext; §8.2 the transcript hash inputs; §8.4 PreSharedKeyID
* §10 KeyPackage (and KeyPackageTBS)
* §11.1 RequiredCapabilities; §12.1 the proposals; §12.1.8.1 ExternalSender; §12.4 Commit
* §12.4.3 GroupInfo (and GroupInfoTBS); §12.4.3.1 GroupSecrets, EncryptedGroupSecrets, Welcome;
  §12.4.3.2 ExternalPub; §12.4.3.3 the ratchet tree (``optional<Node> ratchet_tree<V>``)

Every structure is a frozen dataclass with ``encode()`` (or ``write(w)``), ``read(r)`` and
``decode(data)``. Decoding raises :class:`~bridge.mls.errors.DecodeError` on anything the RFC does
not allow: a value outside an enumeration it fixes (wire format, content type, sender type,
credential type, leaf node source, node type, proposal type, PSK type and usage), an optional
presence byte other than 0 or 1, short input, and bytes left over. Extension types are extensible:
every extension is kept as its type and opaque data. Constructing a structure whose select arms do
not match its discriminant raises ``ValueError``.

:func:`check_messages` runs one case of the working group's "messages" test vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from bridge.mls.checks import expect
from bridge.mls.errors import DecodeError
from bridge.mls.tls import Reader, Writer, decode_all

if TYPE_CHECKING:
    from typing import Self

    from bridge.mls.suite import CipherSuite

__all__ = [
    "ProtocolVersion", "WireFormat", "ContentType", "SenderType", "CredentialType", "LeafNodeSource",
    "NodeType", "ProposalType", "ProposalOrRefType", "PSKType", "ResumptionPSKUsage", "ExtensionType",
    "Credential", "Capabilities", "Extension", "Lifetime", "LeafNode", "KeyPackage", "ParentNode", "Node",
    "RatchetTree", "HPKECiphertext", "UpdatePathNode", "UpdatePath",
    "PreSharedKeyID", "Add", "Update", "Remove", "PreSharedKey", "ReInit", "ExternalInit",
    "GroupContextExtensions", "ProposalBody", "Proposal", "ProposalOrRef", "Commit",
    "Sender", "FramedContent", "FramedContentAuthData", "AuthenticatedContent", "PublicMessage",
    "PrivateMessage", "PrivateMessageContent", "PrivateContentAAD", "SenderData", "SenderDataAAD",
    "GroupContext", "GroupInfo", "GroupSecrets", "EncryptedGroupSecrets", "Welcome", "MLSMessageBody", "MLSMessage",
    "RequiredCapabilities", "ExternalPub", "ExternalSender",
    "framed_content_tbs", "confirmed_transcript_hash_input", "interim_transcript_hash_input",
    "check_messages",
]

E = TypeVar("E", bound=IntEnum)


class ProtocolVersion(IntEnum):
    MLS10 = 1


class WireFormat(IntEnum):
    PUBLIC_MESSAGE = 1
    PRIVATE_MESSAGE = 2
    WELCOME = 3
    GROUP_INFO = 4
    KEY_PACKAGE = 5


class ContentType(IntEnum):
    APPLICATION = 1
    PROPOSAL = 2
    COMMIT = 3


class SenderType(IntEnum):
    MEMBER = 1
    EXTERNAL = 2
    NEW_MEMBER_PROPOSAL = 3
    NEW_MEMBER_COMMIT = 4


class CredentialType(IntEnum):
    BASIC = 1
    X509 = 2


class LeafNodeSource(IntEnum):
    KEY_PACKAGE = 1
    UPDATE = 2
    COMMIT = 3


class NodeType(IntEnum):
    LEAF = 1
    PARENT = 2


class ProposalType(IntEnum):
    ADD = 1
    UPDATE = 2
    REMOVE = 3
    PSK = 4
    REINIT = 5
    EXTERNAL_INIT = 6
    GROUP_CONTEXT_EXTENSIONS = 7


class ProposalOrRefType(IntEnum):
    PROPOSAL = 1
    REFERENCE = 2


class PSKType(IntEnum):
    EXTERNAL = 1
    RESUMPTION = 2


class ResumptionPSKUsage(IntEnum):
    APPLICATION = 1
    REINIT = 2
    BRANCH = 3


class ExtensionType(IntEnum):
    """The extension types §17.3 registers; others are kept as they come (:class:`Extension`)."""

    APPLICATION_ID = 1
    RATCHET_TREE = 2
    REQUIRED_CAPABILITIES = 3
    EXTERNAL_PUB = 4
    EXTERNAL_SENDERS = 5


def _enum(cls: type[E], value: int) -> E:
    try:
        return cls(value)
    except ValueError:
        raise DecodeError(f"{value} is not a {cls.__name__}") from None


def _tuple(r: Reader, decode: Callable[[Reader], Any]) -> tuple[Any, ...]:
    return tuple(r.vector(decode))


def _u16s(w: Writer, items: tuple[int, ...]) -> None:
    w.vector(items, lambda n: n.to_bytes(2, "big"))


def _encode(x: _Struct) -> bytes:
    return x.encode()


def _opaque_bytes(data: bytes) -> bytes:
    return Writer().opaque(data).bytes()


class _Struct:
    """``encode``/``decode`` on top of each structure's ``write``/``read``."""

    def write(self, w: Writer) -> None:
        raise NotImplementedError

    def encode(self) -> bytes:
        w = Writer()
        self.write(w)
        return w.bytes()

    @classmethod
    def read(cls, r: Reader) -> Self:
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return decode_all(data, cls.read, cls.__name__)  # type: ignore[no-any-return]


def _check_arms(what: str, tag: object, arms: dict[str, object], wanted: tuple[str, ...]) -> None:
    for name, value in arms.items():
        if (value is not None) != (name in wanted):
            state = "needs" if name in wanted else "must not have"
            raise ValueError(f"{what} {tag!r} {state} {name}")


# --- §5.3, §7.2: credentials, capabilities, extensions, leaf nodes ----------------------------------


@dataclass(frozen=True)
class Credential(_Struct):
    """§5.3: a basic credential (``identity``) or an X.509 chain (``certificates``)."""

    credential_type: CredentialType
    identity: bytes | None = None
    certificates: tuple[bytes, ...] | None = None

    def __post_init__(self) -> None:
        wanted = ("identity",) if self.credential_type == CredentialType.BASIC else ("certificates",)
        _check_arms("credential type", self.credential_type, {"identity": self.identity, "certificates": self.certificates}, wanted)

    @classmethod
    def basic(cls, identity: bytes) -> Credential:
        return cls(CredentialType.BASIC, identity=identity)

    @classmethod
    def x509(cls, certificates: tuple[bytes, ...]) -> Credential:
        return cls(CredentialType.X509, certificates=tuple(certificates))

    def write(self, w: Writer) -> None:
        w.u16(self.credential_type)
        if self.identity is not None:
            w.opaque(self.identity)
        else:
            w.vector(self.certificates or (), _opaque_bytes)

    @classmethod
    def read(cls, r: Reader) -> Credential:
        credential_type = _enum(CredentialType, r.u16())
        if credential_type == CredentialType.BASIC:
            return cls(credential_type, identity=r.opaque())
        return cls(credential_type, certificates=_tuple(r, Reader.opaque))


@dataclass(frozen=True)
class Capabilities(_Struct):
    """§7.2: what a client supports (every list is of uint16 code points, unknown ones kept)."""

    versions: tuple[int, ...] = ()
    cipher_suites: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    proposals: tuple[int, ...] = ()
    credentials: tuple[int, ...] = ()

    def write(self, w: Writer) -> None:
        for items in (self.versions, self.cipher_suites, self.extensions, self.proposals, self.credentials):
            _u16s(w, items)

    @classmethod
    def read(cls, r: Reader) -> Capabilities:
        return cls(*(_tuple(r, Reader.u16) for _ in range(5)))


@dataclass(frozen=True)
class Extension(_Struct):
    """§13: ``extension_type`` (any uint16) and its opaque ``extension_data``."""

    extension_type: int
    extension_data: bytes

    def write(self, w: Writer) -> None:
        w.u16(self.extension_type).opaque(self.extension_data)

    @classmethod
    def read(cls, r: Reader) -> Extension:
        return cls(r.u16(), r.opaque())


def _write_extensions(w: Writer, extensions: tuple[Extension, ...]) -> None:
    w.vector(extensions, _encode)


def _read_extensions(r: Reader) -> tuple[Extension, ...]:
    return _tuple(r, Extension.read)


@dataclass(frozen=True)
class Lifetime(_Struct):
    """§7.2: the validity window of a KeyPackage's leaf, in seconds since the Unix epoch."""

    not_before: int
    not_after: int

    def write(self, w: Writer) -> None:
        w.u64(self.not_before).u64(self.not_after)

    @classmethod
    def read(cls, r: Reader) -> Lifetime:
        return cls(r.u64(), r.u64())


@dataclass(frozen=True)
class LeafNode(_Struct):
    """§7.2: a member's leaf. ``lifetime`` is set exactly for the key_package source, ``parent_hash``
    exactly for the commit source."""

    encryption_key: bytes
    signature_key: bytes
    credential: Credential
    capabilities: Capabilities
    leaf_node_source: LeafNodeSource
    lifetime: Lifetime | None = None
    parent_hash: bytes | None = None
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""

    def __post_init__(self) -> None:
        wanted = {LeafNodeSource.KEY_PACKAGE: ("lifetime",), LeafNodeSource.COMMIT: ("parent_hash",)}.get(self.leaf_node_source, ())
        _check_arms("leaf_node_source", self.leaf_node_source, {"lifetime": self.lifetime, "parent_hash": self.parent_hash}, wanted)

    def _write_content(self, w: Writer) -> None:
        w.opaque(self.encryption_key).opaque(self.signature_key)
        self.credential.write(w)
        self.capabilities.write(w)
        w.u8(self.leaf_node_source)
        if self.lifetime is not None:
            self.lifetime.write(w)
        if self.parent_hash is not None:
            w.opaque(self.parent_hash)
        _write_extensions(w, self.extensions)

    def write(self, w: Writer) -> None:
        self._write_content(w)
        w.opaque(self.signature)

    def tbs(self, group_id: bytes | None = None, leaf_index: int | None = None) -> bytes:
        """The LeafNodeTBS bytes (signed with the label "LeafNodeTBS"). ``group_id`` and
        ``leaf_index`` are needed exactly when the source is update or commit."""
        w = Writer()
        self._write_content(w)
        if self.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
            if group_id is not None or leaf_index is not None:
                raise ValueError("a key_package leaf is signed without group_id and leaf_index")
        else:
            if group_id is None or leaf_index is None:
                raise ValueError(f"a {self.leaf_node_source.name.lower()} leaf is signed with its group_id and leaf_index")
            w.opaque(group_id).u32(leaf_index)
        return w.bytes()

    @classmethod
    def read(cls, r: Reader) -> LeafNode:
        encryption_key = r.opaque()
        signature_key = r.opaque()
        credential = Credential.read(r)
        capabilities = Capabilities.read(r)
        source = _enum(LeafNodeSource, r.u8())
        lifetime = Lifetime.read(r) if source == LeafNodeSource.KEY_PACKAGE else None
        parent_hash = r.opaque() if source == LeafNodeSource.COMMIT else None
        extensions = _read_extensions(r)
        return cls(encryption_key, signature_key, credential, capabilities, source, lifetime, parent_hash, extensions, r.opaque())


# --- §10: key packages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPackage(_Struct):
    """§10: a client's offer to be added to a group."""

    version: int
    cipher_suite: int
    init_key: bytes
    leaf_node: LeafNode
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""

    def _write_content(self, w: Writer) -> None:
        w.u16(self.version).u16(self.cipher_suite).opaque(self.init_key)
        self.leaf_node.write(w)
        _write_extensions(w, self.extensions)

    def write(self, w: Writer) -> None:
        self._write_content(w)
        w.opaque(self.signature)

    def tbs(self) -> bytes:
        """The KeyPackageTBS bytes (signed with the label "KeyPackageTBS")."""
        w = Writer()
        self._write_content(w)
        return w.bytes()

    def ref(self, cs: CipherSuite) -> bytes:
        """§5.2: the KeyPackageRef, ``RefHash("MLS 1.0 KeyPackage Reference", KeyPackage)``."""
        return cs.ref_hash("MLS 1.0 KeyPackage Reference", self.encode())

    @classmethod
    def read(cls, r: Reader) -> KeyPackage:
        version, cipher_suite, init_key = r.u16(), r.u16(), r.opaque()
        leaf_node = LeafNode.read(r)
        extensions = _read_extensions(r)
        return cls(version, cipher_suite, init_key, leaf_node, extensions, r.opaque())


# --- §7: the ratchet tree and update paths --------------------------------------------------------


@dataclass(frozen=True)
class ParentNode(_Struct):
    """§7.1: an interior node of the ratchet tree."""

    encryption_key: bytes
    parent_hash: bytes
    unmerged_leaves: tuple[int, ...] = ()

    def write(self, w: Writer) -> None:
        w.opaque(self.encryption_key).opaque(self.parent_hash)
        w.vector(self.unmerged_leaves, lambda n: n.to_bytes(4, "big"))

    @classmethod
    def read(cls, r: Reader) -> ParentNode:
        return cls(r.opaque(), r.opaque(), _tuple(r, Reader.u32))


@dataclass(frozen=True)
class Node(_Struct):
    """§7.8, §12.4.3.3: a leaf (``leaf_node``) or a parent (``parent_node``)."""

    node_type: NodeType
    leaf_node: LeafNode | None = None
    parent_node: ParentNode | None = None

    def __post_init__(self) -> None:
        wanted = ("leaf_node",) if self.node_type == NodeType.LEAF else ("parent_node",)
        _check_arms("node_type", self.node_type, {"leaf_node": self.leaf_node, "parent_node": self.parent_node}, wanted)

    @classmethod
    def leaf(cls, leaf_node: LeafNode) -> Node:
        return cls(NodeType.LEAF, leaf_node=leaf_node)

    @classmethod
    def parent(cls, parent_node: ParentNode) -> Node:
        return cls(NodeType.PARENT, parent_node=parent_node)

    def write(self, w: Writer) -> None:
        w.u8(self.node_type)
        if self.leaf_node is not None:
            self.leaf_node.write(w)
        else:
            self.parent_node.write(w)  # type: ignore[union-attr]

    @classmethod
    def read(cls, r: Reader) -> Node:
        node_type = _enum(NodeType, r.u8())
        if node_type == NodeType.LEAF:
            return cls(node_type, leaf_node=LeafNode.read(r))
        return cls(node_type, parent_node=ParentNode.read(r))


@dataclass(frozen=True)
class RatchetTree(_Struct):
    """§12.4.3.3: ``optional<Node> ratchet_tree<V>``, blank nodes as None. Decoding also refuses an
    empty tree, a blank last node (§12.4.3.3 has the receiver check it), and a leaf at an odd index
    or a parent at an even one (the array layout of §4.2)."""

    nodes: tuple[Node | None, ...]

    def write(self, w: Writer) -> None:
        w.vector(self.nodes, lambda n: Writer().optional(n, _encode).bytes())

    @classmethod
    def read(cls, r: Reader) -> RatchetTree:
        nodes = _tuple(r, lambda inner: inner.optional(Node.read))
        if not nodes:
            raise DecodeError("the ratchet tree is empty")
        if nodes[-1] is None:
            raise DecodeError("the ratchet tree ends with a blank node")
        for i, node in enumerate(nodes):
            if node is not None and node.node_type != (NodeType.LEAF if i % 2 == 0 else NodeType.PARENT):
                raise DecodeError(f"node {i} of the ratchet tree is a {node.node_type.name.lower()} node")
        return cls(nodes)


@dataclass(frozen=True)
class HPKECiphertext(_Struct):
    """§7.6: an HPKE ``kem_output`` and ``ciphertext``."""

    kem_output: bytes
    ciphertext: bytes

    def write(self, w: Writer) -> None:
        w.opaque(self.kem_output).opaque(self.ciphertext)

    @classmethod
    def read(cls, r: Reader) -> HPKECiphertext:
        return cls(r.opaque(), r.opaque())


@dataclass(frozen=True)
class UpdatePathNode(_Struct):
    """§7.6: a new public key on the committer's filtered direct path, and its path secret encrypted
    to each node of the copath node's resolution."""

    encryption_key: bytes
    encrypted_path_secret: tuple[HPKECiphertext, ...] = ()

    def write(self, w: Writer) -> None:
        w.opaque(self.encryption_key).vector(self.encrypted_path_secret, _encode)

    @classmethod
    def read(cls, r: Reader) -> UpdatePathNode:
        return cls(r.opaque(), _tuple(r, HPKECiphertext.read))


@dataclass(frozen=True)
class UpdatePath(_Struct):
    """§7.6: the committer's new leaf and the nodes of its filtered direct path."""

    leaf_node: LeafNode
    nodes: tuple[UpdatePathNode, ...] = ()

    def write(self, w: Writer) -> None:
        self.leaf_node.write(w)
        w.vector(self.nodes, _encode)

    @classmethod
    def read(cls, r: Reader) -> UpdatePath:
        return cls(LeafNode.read(r), _tuple(r, UpdatePathNode.read))


# --- §8.4, §12.1: proposals ----------------------------------------------------------------------


@dataclass(frozen=True)
class PreSharedKeyID(_Struct):
    """§8.4: an external PSK (``psk_id``) or a resumption PSK (``usage``, ``psk_group_id``,
    ``psk_epoch``), and the ``psk_nonce``."""

    psktype: PSKType
    psk_id: bytes | None = None
    usage: ResumptionPSKUsage | None = None
    psk_group_id: bytes | None = None
    psk_epoch: int | None = None
    psk_nonce: bytes = b""

    def __post_init__(self) -> None:
        wanted = ("psk_id",) if self.psktype == PSKType.EXTERNAL else ("usage", "psk_group_id", "psk_epoch")
        arms = {"psk_id": self.psk_id, "usage": self.usage, "psk_group_id": self.psk_group_id, "psk_epoch": self.psk_epoch}
        _check_arms("psktype", self.psktype, arms, wanted)

    @classmethod
    def external(cls, psk_id: bytes, psk_nonce: bytes) -> PreSharedKeyID:
        return cls(PSKType.EXTERNAL, psk_id=psk_id, psk_nonce=psk_nonce)

    @classmethod
    def resumption(cls, usage: ResumptionPSKUsage, psk_group_id: bytes, psk_epoch: int, psk_nonce: bytes) -> PreSharedKeyID:
        return cls(PSKType.RESUMPTION, usage=usage, psk_group_id=psk_group_id, psk_epoch=psk_epoch, psk_nonce=psk_nonce)

    def write(self, w: Writer) -> None:
        w.u8(self.psktype)
        if self.psk_id is not None:
            w.opaque(self.psk_id)
        else:
            w.u8(self.usage).opaque(self.psk_group_id).u64(self.psk_epoch)  # type: ignore[arg-type]
        w.opaque(self.psk_nonce)

    @classmethod
    def read(cls, r: Reader) -> PreSharedKeyID:
        psktype = _enum(PSKType, r.u8())
        if psktype == PSKType.EXTERNAL:
            return cls(psktype, psk_id=r.opaque(), psk_nonce=r.opaque())
        usage = _enum(ResumptionPSKUsage, r.u8())
        group_id, epoch = r.opaque(), r.u64()
        return cls(psktype, usage=usage, psk_group_id=group_id, psk_epoch=epoch, psk_nonce=r.opaque())


@dataclass(frozen=True)
class Add(_Struct):
    """§12.1.1: add the client of ``key_package``."""

    proposal_type: ClassVar[ProposalType] = ProposalType.ADD
    key_package: KeyPackage

    def write(self, w: Writer) -> None:
        self.key_package.write(w)

    @classmethod
    def read(cls, r: Reader) -> Add:
        return cls(KeyPackage.read(r))


@dataclass(frozen=True)
class Update(_Struct):
    """§12.1.2: replace the sender's leaf."""

    proposal_type: ClassVar[ProposalType] = ProposalType.UPDATE
    leaf_node: LeafNode

    def write(self, w: Writer) -> None:
        self.leaf_node.write(w)

    @classmethod
    def read(cls, r: Reader) -> Update:
        return cls(LeafNode.read(r))


@dataclass(frozen=True)
class Remove(_Struct):
    """§12.1.3: remove the member at leaf index ``removed``."""

    proposal_type: ClassVar[ProposalType] = ProposalType.REMOVE
    removed: int

    def write(self, w: Writer) -> None:
        w.u32(self.removed)

    @classmethod
    def read(cls, r: Reader) -> Remove:
        return cls(r.u32())


@dataclass(frozen=True)
class PreSharedKey(_Struct):
    """§12.1.4: inject the PSK ``psk`` into the next epoch's key schedule."""

    proposal_type: ClassVar[ProposalType] = ProposalType.PSK
    psk: PreSharedKeyID

    def write(self, w: Writer) -> None:
        self.psk.write(w)

    @classmethod
    def read(cls, r: Reader) -> PreSharedKey:
        return cls(PreSharedKeyID.read(r))


@dataclass(frozen=True)
class ReInit(_Struct):
    """§12.1.5: close the group and start a new one with these parameters."""

    proposal_type: ClassVar[ProposalType] = ProposalType.REINIT
    group_id: bytes
    version: int
    cipher_suite: int
    extensions: tuple[Extension, ...] = ()

    def write(self, w: Writer) -> None:
        w.opaque(self.group_id).u16(self.version).u16(self.cipher_suite)
        _write_extensions(w, self.extensions)

    @classmethod
    def read(cls, r: Reader) -> ReInit:
        return cls(r.opaque(), r.u16(), r.u16(), _read_extensions(r))


@dataclass(frozen=True)
class ExternalInit(_Struct):
    """§12.1.6: the KEM output of an external joiner's init secret."""

    proposal_type: ClassVar[ProposalType] = ProposalType.EXTERNAL_INIT
    kem_output: bytes

    def write(self, w: Writer) -> None:
        w.opaque(self.kem_output)

    @classmethod
    def read(cls, r: Reader) -> ExternalInit:
        return cls(r.opaque())


@dataclass(frozen=True)
class GroupContextExtensions(_Struct):
    """§12.1.7: replace the group context's extensions."""

    proposal_type: ClassVar[ProposalType] = ProposalType.GROUP_CONTEXT_EXTENSIONS
    extensions: tuple[Extension, ...] = ()

    def write(self, w: Writer) -> None:
        _write_extensions(w, self.extensions)

    @classmethod
    def read(cls, r: Reader) -> GroupContextExtensions:
        return cls(_read_extensions(r))


ProposalBody = Add | Update | Remove | PreSharedKey | ReInit | ExternalInit | GroupContextExtensions

_PROPOSAL_BODIES: dict[ProposalType, type[ProposalBody]] = {
    body.proposal_type: body for body in (Add, Update, Remove, PreSharedKey, ReInit, ExternalInit, GroupContextExtensions)
}


@dataclass(frozen=True)
class Proposal(_Struct):
    """§12.1: one of the seven proposals of RFC 9420; ``proposal_type`` follows from the body."""

    body: ProposalBody

    @property
    def proposal_type(self) -> ProposalType:
        return self.body.proposal_type

    def write(self, w: Writer) -> None:
        w.u16(self.proposal_type)
        self.body.write(w)

    @classmethod
    def read(cls, r: Reader) -> Proposal:
        proposal_type = _enum(ProposalType, r.u16())
        return cls(_PROPOSAL_BODIES[proposal_type].read(r))


@dataclass(frozen=True)
class ProposalOrRef(_Struct):
    """§12.4: a proposal carried in a commit, by value (``proposal``) or by ``reference``."""

    type: ProposalOrRefType
    proposal: Proposal | None = None
    reference: bytes | None = None

    def __post_init__(self) -> None:
        wanted = ("proposal",) if self.type == ProposalOrRefType.PROPOSAL else ("reference",)
        _check_arms("ProposalOrRef type", self.type, {"proposal": self.proposal, "reference": self.reference}, wanted)

    @classmethod
    def by_value(cls, proposal: Proposal) -> ProposalOrRef:
        return cls(ProposalOrRefType.PROPOSAL, proposal=proposal)

    @classmethod
    def by_reference(cls, reference: bytes) -> ProposalOrRef:
        return cls(ProposalOrRefType.REFERENCE, reference=reference)

    def write(self, w: Writer) -> None:
        w.u8(self.type)
        if self.proposal is not None:
            self.proposal.write(w)
        else:
            w.opaque(self.reference)  # type: ignore[arg-type]

    @classmethod
    def read(cls, r: Reader) -> ProposalOrRef:
        kind = _enum(ProposalOrRefType, r.u8())
        if kind == ProposalOrRefType.PROPOSAL:
            return cls(kind, proposal=Proposal.read(r))
        return cls(kind, reference=r.opaque())


@dataclass(frozen=True)
class Commit(_Struct):
    """§12.4: the proposals a commit applies, and its optional UpdatePath."""

    proposals: tuple[ProposalOrRef, ...] = ()
    path: UpdatePath | None = None

    def write(self, w: Writer) -> None:
        w.vector(self.proposals, _encode).optional(self.path, _encode)

    @classmethod
    def read(cls, r: Reader) -> Commit:
        return cls(_tuple(r, ProposalOrRef.read), r.optional(UpdatePath.read))


# --- §6: framing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sender(_Struct):
    """§6: who sent a message: a member (``leaf_index``), an external sender (``sender_index`` into
    the external_senders extension), or a new member."""

    sender_type: SenderType
    leaf_index: int | None = None
    sender_index: int | None = None

    def __post_init__(self) -> None:
        wanted = {SenderType.MEMBER: ("leaf_index",), SenderType.EXTERNAL: ("sender_index",)}.get(self.sender_type, ())
        _check_arms("sender_type", self.sender_type, {"leaf_index": self.leaf_index, "sender_index": self.sender_index}, wanted)

    @classmethod
    def member(cls, leaf_index: int) -> Sender:
        return cls(SenderType.MEMBER, leaf_index=leaf_index)

    @classmethod
    def external(cls, sender_index: int) -> Sender:
        return cls(SenderType.EXTERNAL, sender_index=sender_index)

    @classmethod
    def new_member_proposal(cls) -> Sender:
        return cls(SenderType.NEW_MEMBER_PROPOSAL)

    @classmethod
    def new_member_commit(cls) -> Sender:
        return cls(SenderType.NEW_MEMBER_COMMIT)

    def write(self, w: Writer) -> None:
        w.u8(self.sender_type)
        index = self.leaf_index if self.leaf_index is not None else self.sender_index
        if index is not None:
            w.u32(index)

    @classmethod
    def read(cls, r: Reader) -> Sender:
        sender_type = _enum(SenderType, r.u8())
        if sender_type == SenderType.MEMBER:
            return cls(sender_type, leaf_index=r.u32())
        if sender_type == SenderType.EXTERNAL:
            return cls(sender_type, sender_index=r.u32())
        return cls(sender_type)


_CONTENT_ARMS = {ContentType.APPLICATION: "application_data", ContentType.PROPOSAL: "proposal", ContentType.COMMIT: "commit"}


class _Content:
    """The ``select (content_type)`` that FramedContent and PrivateMessageContent share."""

    content_type: ContentType
    application_data: bytes | None
    proposal: Proposal | None
    commit: Commit | None

    def _check_content(self, what: str) -> None:
        arms = {"application_data": self.application_data, "proposal": self.proposal, "commit": self.commit}
        _check_arms(f"{what} content_type", self.content_type, arms, (_CONTENT_ARMS[ContentType(self.content_type)],))

    def _write_content(self, w: Writer) -> None:
        if self.application_data is not None:
            w.opaque(self.application_data)
        elif self.proposal is not None:
            self.proposal.write(w)
        else:
            self.commit.write(w)  # type: ignore[union-attr]


def _read_content(r: Reader, content_type: ContentType) -> dict[str, Any]:
    if content_type == ContentType.APPLICATION:
        return {"application_data": r.opaque()}
    if content_type == ContentType.PROPOSAL:
        return {"proposal": Proposal.read(r)}
    return {"commit": Commit.read(r)}


@dataclass(frozen=True)
class FramedContent(_Content, _Struct):
    """§6: the content of a message (set exactly the arm of ``content_type``)."""

    group_id: bytes
    epoch: int
    sender: Sender
    authenticated_data: bytes
    content_type: ContentType
    application_data: bytes | None = None
    proposal: Proposal | None = None
    commit: Commit | None = None

    def __post_init__(self) -> None:
        self._check_content("FramedContent")

    def write(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch)
        self.sender.write(w)
        w.opaque(self.authenticated_data).u8(self.content_type)
        self._write_content(w)

    @classmethod
    def read(cls, r: Reader) -> FramedContent:
        group_id, epoch = r.opaque(), r.u64()
        sender = Sender.read(r)
        authenticated_data = r.opaque()
        content_type = _enum(ContentType, r.u8())
        return cls(group_id, epoch, sender, authenticated_data, content_type, **_read_content(r, content_type))


@dataclass(frozen=True)
class FramedContentAuthData(_Struct):
    """§6.1: the signature over FramedContentTBS, and the confirmation tag exactly for a commit."""

    signature: bytes
    confirmation_tag: bytes | None = None

    def write(self, w: Writer) -> None:
        w.opaque(self.signature)
        if self.confirmation_tag is not None:
            w.opaque(self.confirmation_tag)

    def _check(self, content_type: ContentType) -> None:
        if (self.confirmation_tag is not None) != (content_type == ContentType.COMMIT):
            raise ValueError("a confirmation_tag goes with a commit, and only with a commit")

    @classmethod
    def read(cls, r: Reader, content_type: ContentType) -> FramedContentAuthData:  # type: ignore[override]
        """``content_type`` is the content's: a commit's auth data carries the confirmation tag."""
        signature = r.opaque()
        return cls(signature, r.opaque() if content_type == ContentType.COMMIT else None)

    @classmethod
    def decode(cls, data: bytes, content_type: ContentType) -> FramedContentAuthData:  # type: ignore[override]
        return decode_all(data, lambda r: cls.read(r, content_type), cls.__name__)  # type: ignore[no-any-return]


def framed_content_tbs(wire_format: WireFormat, content: FramedContent, group_context: bytes | None) -> bytes:
    """§6.1: the FramedContentTBS bytes. ``group_context`` (a serialized GroupContext) is needed
    exactly when the sender is a member or a new member committing."""
    w = Writer().u16(ProtocolVersion.MLS10).u16(wire_format)
    content.write(w)
    if content.sender.sender_type in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT):
        if group_context is None:
            raise ValueError(f"a {content.sender.sender_type.name.lower()} sender signs over the group context")
        w.raw(group_context)
    elif group_context is not None:
        raise ValueError(f"a {content.sender.sender_type.name.lower()} sender does not sign over a group context")
    return w.bytes()


def confirmed_transcript_hash_input(wire_format: WireFormat, content: FramedContent, signature: bytes) -> bytes:
    """§8.2: the ConfirmedTranscriptHashInput bytes."""
    w = Writer().u16(wire_format)
    content.write(w)
    return w.opaque(signature).bytes()


def interim_transcript_hash_input(confirmation_tag: bytes) -> bytes:
    """§8.2: the InterimTranscriptHashInput bytes."""
    return Writer().opaque(confirmation_tag).bytes()


@dataclass(frozen=True)
class AuthenticatedContent(_Struct):
    """§6.1: a signed FramedContent and the wire format it was sent in."""

    wire_format: WireFormat
    content: FramedContent
    auth: FramedContentAuthData

    def __post_init__(self) -> None:
        self.auth._check(self.content.content_type)

    def write(self, w: Writer) -> None:
        w.u16(self.wire_format)
        self.content.write(w)
        self.auth.write(w)

    @classmethod
    def read(cls, r: Reader) -> AuthenticatedContent:
        wire_format = _enum(WireFormat, r.u16())
        content = FramedContent.read(r)
        return cls(wire_format, content, FramedContentAuthData.read(r, content.content_type))

    def tbs(self, group_context: bytes | None) -> bytes:
        """The FramedContentTBS bytes (see :func:`framed_content_tbs`)."""
        return framed_content_tbs(self.wire_format, self.content, group_context)

    def tbm(self, group_context: bytes | None) -> bytes:
        """§6.2: the AuthenticatedContentTBM bytes the membership tag is a MAC of."""
        return self.tbs(group_context) + self.auth.encode()

    def confirmed_transcript_hash_input(self) -> bytes:
        return confirmed_transcript_hash_input(self.wire_format, self.content, self.auth.signature)

    def ref(self, cs: CipherSuite) -> bytes:
        """§5.2: the ProposalRef of a proposal, ``RefHash("MLS 1.0 Proposal Reference", AuthenticatedContent)``."""
        return cs.ref_hash("MLS 1.0 Proposal Reference", self.encode())


@dataclass(frozen=True)
class PublicMessage(_Struct):
    """§6.2: a signed, unencrypted message; ``membership_tag`` is set exactly for a member sender."""

    content: FramedContent
    auth: FramedContentAuthData
    membership_tag: bytes | None = None

    def __post_init__(self) -> None:
        self.auth._check(self.content.content_type)
        if (self.membership_tag is not None) != (self.content.sender.sender_type == SenderType.MEMBER):
            raise ValueError("a membership_tag goes with a member sender, and only with one")

    def write(self, w: Writer) -> None:
        self.content.write(w)
        self.auth.write(w)
        if self.membership_tag is not None:
            w.opaque(self.membership_tag)

    @classmethod
    def read(cls, r: Reader) -> PublicMessage:
        content = FramedContent.read(r)
        auth = FramedContentAuthData.read(r, content.content_type)
        tag = r.opaque() if content.sender.sender_type == SenderType.MEMBER else None
        return cls(content, auth, tag)

    def authenticated_content(self) -> AuthenticatedContent:
        return AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, self.content, self.auth)


@dataclass(frozen=True)
class PrivateMessage(_Struct):
    """§6.3: an encrypted message."""

    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes
    encrypted_sender_data: bytes
    ciphertext: bytes

    def write(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch).u8(self.content_type).opaque(self.authenticated_data)
        w.opaque(self.encrypted_sender_data).opaque(self.ciphertext)

    @classmethod
    def read(cls, r: Reader) -> PrivateMessage:
        group_id, epoch = r.opaque(), r.u64()
        content_type = _enum(ContentType, r.u8())
        return cls(group_id, epoch, content_type, r.opaque(), r.opaque(), r.opaque())

    def content_aad(self) -> bytes:
        """§6.3.1: the PrivateContentAAD bytes."""
        return PrivateContentAAD(self.group_id, self.epoch, self.content_type, self.authenticated_data).encode()

    def sender_data_aad(self) -> bytes:
        """§6.3.2: the SenderDataAAD bytes."""
        return SenderDataAAD(self.group_id, self.epoch, self.content_type).encode()


@dataclass(frozen=True)
class PrivateMessageContent(_Content, _Struct):
    """§6.3.1: the plaintext of a PrivateMessage. ``padding`` is its number of zero bytes."""

    content_type: ContentType
    auth: FramedContentAuthData
    application_data: bytes | None = None
    proposal: Proposal | None = None
    commit: Commit | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        self._check_content("PrivateMessageContent")
        self.auth._check(self.content_type)
        if self.padding < 0:
            raise ValueError("negative padding")

    def write(self, w: Writer) -> None:
        """The content type is not written: it travels in the PrivateMessage."""
        self._write_content(w)
        self.auth.write(w)
        w.raw(bytes(self.padding))

    @classmethod
    def read(cls, r: Reader, content_type: ContentType) -> PrivateMessageContent:  # type: ignore[override]
        """Reads to the end of ``r``: what follows the auth data is padding, which must be zeros."""
        arm = _read_content(r, content_type)
        auth = FramedContentAuthData.read(r, content_type)
        padding = r.raw(r.remaining())
        if padding.count(0) != len(padding):
            raise DecodeError("non-zero padding in a PrivateMessageContent")
        return cls(content_type, auth, padding=len(padding), **arm)

    @classmethod
    def decode(cls, data: bytes, content_type: ContentType) -> PrivateMessageContent:  # type: ignore[override]
        return decode_all(data, lambda r: cls.read(r, content_type), cls.__name__)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PrivateContentAAD(_Struct):
    """§6.3.1: the additional data of the content encryption."""

    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes

    def write(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch).u8(self.content_type).opaque(self.authenticated_data)

    @classmethod
    def read(cls, r: Reader) -> PrivateContentAAD:
        group_id, epoch = r.opaque(), r.u64()
        return cls(group_id, epoch, _enum(ContentType, r.u8()), r.opaque())


@dataclass(frozen=True)
class SenderData(_Struct):
    """§6.3.2: the encrypted sender: leaf index, generation and the 4-byte reuse guard."""

    leaf_index: int
    generation: int
    reuse_guard: bytes

    def __post_init__(self) -> None:
        if len(self.reuse_guard) != 4:
            raise ValueError("reuse_guard is 4 bytes")

    def write(self, w: Writer) -> None:
        w.u32(self.leaf_index).u32(self.generation).raw(self.reuse_guard)

    @classmethod
    def read(cls, r: Reader) -> SenderData:
        return cls(r.u32(), r.u32(), r.raw(4))


@dataclass(frozen=True)
class SenderDataAAD(_Struct):
    """§6.3.2: the additional data of the sender data encryption."""

    group_id: bytes
    epoch: int
    content_type: ContentType

    def write(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch).u8(self.content_type)

    @classmethod
    def read(cls, r: Reader) -> SenderDataAAD:
        group_id, epoch = r.opaque(), r.u64()
        return cls(group_id, epoch, _enum(ContentType, r.u8()))


# --- §8.1, §12.4.3: group context, group info, welcome --------------------------------------------


@dataclass(frozen=True)
class GroupContext(_Struct):
    """§8.1: the state of the group every member agrees on in an epoch."""

    version: int
    cipher_suite: int
    group_id: bytes
    epoch: int
    tree_hash: bytes
    confirmed_transcript_hash: bytes
    extensions: tuple[Extension, ...] = ()

    def write(self, w: Writer) -> None:
        w.u16(self.version).u16(self.cipher_suite).opaque(self.group_id).u64(self.epoch)
        w.opaque(self.tree_hash).opaque(self.confirmed_transcript_hash)
        _write_extensions(w, self.extensions)

    @classmethod
    def read(cls, r: Reader) -> GroupContext:
        version, cipher_suite, group_id, epoch = r.u16(), r.u16(), r.opaque(), r.u64()
        return cls(version, cipher_suite, group_id, epoch, r.opaque(), r.opaque(), _read_extensions(r))


@dataclass(frozen=True)
class GroupInfo(_Struct):
    """§12.4.3: the group's state as a joiner needs it, signed by the member at leaf ``signer``."""

    group_context: GroupContext
    extensions: tuple[Extension, ...]
    confirmation_tag: bytes
    signer: int
    signature: bytes = b""

    def _write_content(self, w: Writer) -> None:
        self.group_context.write(w)
        _write_extensions(w, self.extensions)
        w.opaque(self.confirmation_tag).u32(self.signer)

    def write(self, w: Writer) -> None:
        self._write_content(w)
        w.opaque(self.signature)

    def tbs(self) -> bytes:
        """The GroupInfoTBS bytes (signed with the label "GroupInfoTBS")."""
        w = Writer()
        self._write_content(w)
        return w.bytes()

    @classmethod
    def read(cls, r: Reader) -> GroupInfo:
        group_context = GroupContext.read(r)
        extensions = _read_extensions(r)
        confirmation_tag, signer = r.opaque(), r.u32()
        return cls(group_context, extensions, confirmation_tag, signer, r.opaque())


@dataclass(frozen=True)
class GroupSecrets(_Struct):
    """§12.4.3.1: what a Welcome encrypts to each new member."""

    joiner_secret: bytes
    path_secret: bytes | None = None
    psks: tuple[PreSharedKeyID, ...] = ()

    def write(self, w: Writer) -> None:
        w.opaque(self.joiner_secret).optional(self.path_secret, _opaque_bytes).vector(self.psks, _encode)

    @classmethod
    def read(cls, r: Reader) -> GroupSecrets:
        return cls(r.opaque(), r.optional(Reader.opaque), _tuple(r, PreSharedKeyID.read))


@dataclass(frozen=True)
class EncryptedGroupSecrets(_Struct):
    """§12.4.3.1: GroupSecrets encrypted to the KeyPackage whose reference is ``new_member``."""

    new_member: bytes
    encrypted_group_secrets: HPKECiphertext

    def write(self, w: Writer) -> None:
        w.opaque(self.new_member)
        self.encrypted_group_secrets.write(w)

    @classmethod
    def read(cls, r: Reader) -> EncryptedGroupSecrets:
        return cls(r.opaque(), HPKECiphertext.read(r))


@dataclass(frozen=True)
class Welcome(_Struct):
    """§12.4.3.1: the message that adds new members."""

    cipher_suite: int
    secrets: tuple[EncryptedGroupSecrets, ...]
    encrypted_group_info: bytes

    def write(self, w: Writer) -> None:
        w.u16(self.cipher_suite).vector(self.secrets, _encode).opaque(self.encrypted_group_info)

    @classmethod
    def read(cls, r: Reader) -> Welcome:
        return cls(r.u16(), _tuple(r, EncryptedGroupSecrets.read), r.opaque())


MLSMessageBody = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage

_MESSAGE_BODIES: dict[WireFormat, type[MLSMessageBody]] = {
    WireFormat.PUBLIC_MESSAGE: PublicMessage,
    WireFormat.PRIVATE_MESSAGE: PrivateMessage,
    WireFormat.WELCOME: Welcome,
    WireFormat.GROUP_INFO: GroupInfo,
    WireFormat.KEY_PACKAGE: KeyPackage,
}


@dataclass(frozen=True)
class MLSMessage(_Struct):
    """§6: the envelope of everything MLS sends (``version``, ``wire_format``, then the body; the
    wire format follows from the body's class). Only mls10 is decoded: the body's structure is
    that version's."""

    body: MLSMessageBody
    version: ProtocolVersion = ProtocolVersion.MLS10

    @property
    def wire_format(self) -> WireFormat:
        return next(wf for wf, cls in _MESSAGE_BODIES.items() if isinstance(self.body, cls))

    def write(self, w: Writer) -> None:
        w.u16(self.version).u16(self.wire_format)
        self.body.write(w)

    @classmethod
    def read(cls, r: Reader) -> MLSMessage:
        version = _enum(ProtocolVersion, r.u16())
        wire_format = _enum(WireFormat, r.u16())
        return cls(_MESSAGE_BODIES[wire_format].read(r), version)


# --- §11.1, §12.1.8.1, §12.4.3.2: extension bodies -------------------------------------------------


@dataclass(frozen=True)
class RequiredCapabilities(_Struct):
    """§11.1: the ``required_capabilities`` extension's data."""

    extension_types: tuple[int, ...] = ()
    proposal_types: tuple[int, ...] = ()
    credential_types: tuple[int, ...] = ()

    def write(self, w: Writer) -> None:
        for items in (self.extension_types, self.proposal_types, self.credential_types):
            _u16s(w, items)

    @classmethod
    def read(cls, r: Reader) -> RequiredCapabilities:
        return cls(*(_tuple(r, Reader.u16) for _ in range(3)))


@dataclass(frozen=True)
class ExternalPub(_Struct):
    """§12.4.3.2: the ``external_pub`` extension's data."""

    external_pub: bytes

    def write(self, w: Writer) -> None:
        w.opaque(self.external_pub)

    @classmethod
    def read(cls, r: Reader) -> ExternalPub:
        return cls(r.opaque())


@dataclass(frozen=True)
class ExternalSender(_Struct):
    """§12.1.8.1: one entry of the ``external_senders`` extension (whose data is
    ``ExternalSender external_senders<V>``)."""

    signature_key: bytes
    credential: Credential

    def write(self, w: Writer) -> None:
        w.opaque(self.signature_key)
        self.credential.write(w)

    @classmethod
    def read(cls, r: Reader) -> ExternalSender:
        return cls(r.opaque(), Credential.read(r))


# --- the "messages" test vectors -------------------------------------------------------------------

_VECTOR_FIELDS: dict[str, tuple[type[_Struct], WireFormat | None]] = {
    "mls_welcome": (MLSMessage, WireFormat.WELCOME),
    "mls_group_info": (MLSMessage, WireFormat.GROUP_INFO),
    "mls_key_package": (MLSMessage, WireFormat.KEY_PACKAGE),
    "ratchet_tree": (RatchetTree, None),
    "group_secrets": (GroupSecrets, None),
    "add_proposal": (Add, None),
    "update_proposal": (Update, None),
    "remove_proposal": (Remove, None),
    "pre_shared_key_proposal": (PreSharedKey, None),
    "re_init_proposal": (ReInit, None),
    "external_init_proposal": (ExternalInit, None),
    "group_context_extensions_proposal": (GroupContextExtensions, None),
    "commit": (Commit, None),
    "public_message_application": (MLSMessage, WireFormat.PUBLIC_MESSAGE),
    "public_message_proposal": (MLSMessage, WireFormat.PUBLIC_MESSAGE),
    "public_message_commit": (MLSMessage, WireFormat.PUBLIC_MESSAGE),
    "private_message": (MLSMessage, WireFormat.PRIVATE_MESSAGE),
}

_PUBLIC_CONTENT_TYPES = {
    "public_message_application": ContentType.APPLICATION,
    "public_message_proposal": ContentType.PROPOSAL,
    "public_message_commit": ContentType.COMMIT,
}


def check_messages(case: dict[str, Any]) -> None:
    """One "messages" vector case: every field decodes as the structure it names (an MLSMessage of
    the named wire format and, for a public message, content type) and re-encodes to its bytes."""
    for name, (cls, wire_format) in _VECTOR_FIELDS.items():
        data = bytes.fromhex(case[name])
        try:
            value = cls.decode(data)
        except DecodeError as exc:
            raise AssertionError(f"{name}: does not decode as {cls.__name__}: {exc}") from exc
        encoded = value.encode()
        if encoded != data:
            first = next((i for i, (a, b) in enumerate(zip(encoded, data)) if a != b), min(len(encoded), len(data)))
            expect(f"{name}: re-encoding (first difference at byte {first})", encoded, data)
        if isinstance(value, MLSMessage):
            expect(f"{name}: wire_format", value.wire_format, wire_format)
            if name in _PUBLIC_CONTENT_TYPES:
                expect(f"{name}: content_type", value.body.content.content_type, _PUBLIC_CONTENT_TYPES[name])  # type: ignore[union-attr]
