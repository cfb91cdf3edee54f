"""Run the MLS working group's test vectors (``mlswg/mls-implementations``, ``test-vectors/``; the
format of each file is in ``tests/vectors/mls/test-vectors.md``).

    python -m bridge.mls.vectors FILE...

Prints, for each file, ``FILE: N passed, M failed, K skipped``, then the first failures. Skipped
is only ever a case for a cipher suite Parley does not implement (it offers 0x0001 and 0x0003).
Exits 1 when any case failed (or a file could not be read), else 0.

Nothing is keyed to a file name: each case is recognised by its fields (every format's fields are
distinct), so a file of any name, or a mix, runs through the same checks. A case of no known
format fails, saying so.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.mls.errors import UnsupportedSuite

__all__ = ["FORMATS", "Tally", "check_case", "run_file", "main"]


@dataclass(frozen=True)
class Format:
    name: str
    fields: frozenset[str]
    check: str  # "module:function"; the function takes the case and raises on a failure


def _f(name: str, fields: str, check: str) -> Format:
    return Format(name, frozenset(fields.split()), check)


#: The vector formats of test-vectors.md, by the fields that identify a case of each.
FORMATS: tuple[Format, ...] = (
    _f("tree-math", "n_leaves n_nodes root left right parent sibling", "bridge.mls.checks:tree_math"),
    _f("crypto-basics", "cipher_suite ref_hash expand_with_label derive_secret derive_tree_secret sign_with_label encrypt_with_label",
       "bridge.mls.checks:crypto_basics"),
    _f("secret-tree", "cipher_suite sender_data encryption_secret leaves", "bridge.mls.key_schedule:check_secret_tree"),
    _f("key-schedule", "cipher_suite group_id initial_init_secret epochs", "bridge.mls.key_schedule:check_key_schedule"),
    _f("psk-secret", "cipher_suite psks psk_secret", "bridge.mls.key_schedule:check_psk_secret"),
    _f("message-protection", "cipher_suite group_id epoch tree_hash confirmed_transcript_hash signature_priv signature_pub "
       "encryption_secret sender_data_secret membership_key proposal proposal_pub proposal_priv commit commit_pub commit_priv "
       "application application_priv", "bridge.mls.framing:check_message_protection"),
    _f("transcript-hashes", "cipher_suite confirmation_key authenticated_content interim_transcript_hash_before "
       "confirmed_transcript_hash_after interim_transcript_hash_after", "bridge.mls.framing:check_transcript_hashes"),
    _f("welcome", "cipher_suite init_priv signer_pub key_package welcome", "bridge.mls.welcome:check_welcome"),
    _f("tree-operations", "cipher_suite tree_before proposal proposal_sender tree_after tree_hash_before tree_hash_after",
       "bridge.mls.tree:check_tree_operations"),
    _f("tree-validation", "cipher_suite tree group_id resolutions tree_hashes", "bridge.mls.tree:check_tree_validation"),
    _f("treekem", "cipher_suite group_id epoch confirmed_transcript_hash ratchet_tree leaves_private update_paths",
       "bridge.mls.treekem:check_treekem"),
    _f("messages", "mls_welcome mls_group_info mls_key_package ratchet_tree group_secrets add_proposal update_proposal "
       "remove_proposal pre_shared_key_proposal re_init_proposal external_init_proposal group_context_extensions_proposal "
       "commit public_message_application public_message_proposal public_message_commit private_message",
       "bridge.mls.messages:check_messages"),
    _f("passive-client", "cipher_suite key_package signature_priv encryption_priv init_priv welcome ratchet_tree "
       "external_psks initial_epoch_authenticator epochs", "bridge.mls.group:check_passive_client"),
    _f("deserialization", "vlbytes_header length", "bridge.mls.checks:deserialization"),
)


def _format_of(case: Any) -> Format | None:
    if not isinstance(case, dict):
        return None
    keys = set(case)
    matches = [f for f in FORMATS if f.fields <= keys]
    return max(matches, key=lambda f: len(f.fields)) if matches else None


def _checker(fmt: Format) -> Callable[[dict[str, Any]], None]:
    module, _, name = fmt.check.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def check_case(case: Any) -> str | None:
    """Check one case: None when it passes, ``"skipped"`` for a suite not implemented.

    Raises:
        Exception: the case failed (the message says how).
    """
    fmt = _format_of(case)
    if fmt is None:
        raise ValueError(f"not a case of any known vector format (fields: {sorted(case) if isinstance(case, dict) else type(case).__name__})")
    try:
        _checker(fmt)(case)
    except UnsupportedSuite:
        return "skipped"
    return None


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        return f"{name}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped"


def run_file(path: str | Path) -> Tally:
    """Every case of one vector file (a JSON array of cases)."""
    tally = Tally()
    try:
        cases = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        tally.failed += 1
        tally.failures.append(f"cannot read: {exc}")
        return tally
    if not isinstance(cases, list):
        cases = [cases]
    for i, case in enumerate(cases):
        try:
            outcome = check_case(case)
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            tally.failed += 1
            tally.failures.append(f"case {i}: {type(exc).__name__}: {exc}")
            continue
        if outcome == "skipped":
            tally.skipped += 1
        else:
            tally.passed += 1
    return tally


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    bad = False
    for name in args:
        tally = run_file(name)
        print(tally.line(name), flush=True)
        for f in tally.failures[:5]:
            print(f"  {f}", flush=True)
        if len(tally.failures) > 5:
            print(f"  … and {len(tally.failures) - 5} more", flush=True)
        bad |= tally.failed > 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
