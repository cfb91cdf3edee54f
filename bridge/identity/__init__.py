"""Wallet identity: EIP-191 installation statements, revocations, verification (DESIGN.md "Identity").

See docs/PROTOCOL.md §3 for the normative text format and the active-set rule. Importing this
package is cheap: eth-account is imported only when a signature is made or checked.
"""

from __future__ import annotations

from bridge.identity.statement import (
    ACTIONS,
    DOMAIN,
    MAX_RECORD_BYTES,
    MAX_STATEMENT_CHARS,
    BadSignature,
    IdentityError,
    InvalidStatement,
    SignedStatement,
    Statement,
    address_from_did,
    authorize_statement,
    checksum_address,
    did,
    revoke_statement,
)
from bridge.identity.verify import (
    EOA,
    EOAVerifier,
    Verifier,
    installations,
    sign_statement,
    verify,
    verify_record_for,
)

__all__ = [
    "DOMAIN",
    "ACTIONS",
    "MAX_STATEMENT_CHARS",
    "MAX_RECORD_BYTES",
    "IdentityError",
    "InvalidStatement",
    "BadSignature",
    "Statement",
    "SignedStatement",
    "checksum_address",
    "did",
    "address_from_did",
    "authorize_statement",
    "revoke_statement",
    "Verifier",
    "EOAVerifier",
    "EOA",
    "sign_statement",
    "verify",
    "verify_record_for",
    "installations",
]
