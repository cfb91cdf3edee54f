"""Attachments (issue 12, contract §6): PLACEHOLDER written by the core helper.

The attachments helper's module replaces this file at merge.
"""

from __future__ import annotations

from typing import Any

from bridge.protocol.content import FileRef


def prepare_uploads(engine: Any, peer: str, uploads: Any) -> list[FileRef]:
    """Encrypt and upload each upload id's file; returns the files of the ``attachment`` content."""
    raise NotImplementedError("attachments are not built yet")
