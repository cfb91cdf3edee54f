"""TLS for relay connections: the one place a bridge's certificate checks are configured.

Bridges verify a relay's certificate against the system's trust store plus, when the environment
variable ``PARLEY_CA_BUNDLE`` names one, a PEM file of extra CA certificates (a private CA, or the
test suite's throw-away CA). The same :func:`client_context` serves every relay HTTP request
(:class:`RelayClient`'s ``requests`` session) and the WebSocket subscription, so the two can never
disagree about which relays are trusted.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from requests.adapters import HTTPAdapter

__all__ = ["CA_BUNDLE_ENV", "TlsConfigError", "client_context", "ContextAdapter", "server_context", "describe_tls_error"]

CA_BUNDLE_ENV = "PARLEY_CA_BUNDLE"


class TlsConfigError(Exception):
    """The TLS configuration cannot be used (a CA bundle or certificate file is missing or unreadable)."""


def client_context() -> ssl.SSLContext:
    """A client context verifying server certificates and host names: the system store, plus the
    PEM file named by ``PARLEY_CA_BUNDLE`` when set.

    Raises:
        TlsConfigError: ``PARLEY_CA_BUNDLE`` names a file that is missing, unreadable or holds no
            PEM certificate.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    bundle = os.environ.get(CA_BUNDLE_ENV)
    if bundle:
        try:
            ctx.load_verify_locations(cafile=bundle)
        except FileNotFoundError:
            raise TlsConfigError(f"{CA_BUNDLE_ENV}={bundle}: no such file") from None
        except PermissionError:
            raise TlsConfigError(f"{CA_BUNDLE_ENV}={bundle}: permission denied") from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TlsConfigError(f"{CA_BUNDLE_ENV}={bundle}: not a PEM file of CA certificates ({exc})") from None
    return ctx


class ContextAdapter(HTTPAdapter):
    """A ``requests`` transport adapter whose HTTPS connections use a given ``ssl.SSLContext``
    (``requests`` alone would use certifi's bundle and ignore the system store and our CA bundle)."""

    def __init__(self, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        self._ssl_context = ssl_context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["ssl_context"] = self._ssl_context
        return super().proxy_manager_for(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # the context decides: do not let requests point the connection at certifi's bundle
        super().cert_verify(conn, url, False, cert)
        if url.lower().startswith("https"):
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = None
            conn.ca_cert_dir = None


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for ``parley relay --tls-cert/--tls-key`` (TLS 1.2 or newer).

    Raises:
        TlsConfigError: a file is missing or unreadable, or the key does not match the certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for path in (cert_file, key_file):
        if not os.path.isfile(path):
            raise TlsConfigError(f"TLS file {path}: no such file")
        if not os.access(path, os.R_OK):
            raise TlsConfigError(f"TLS file {path}: permission denied")
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise TlsConfigError(f"cannot use TLS certificate {cert_file} with key {key_file}: {reason}") from None
    return ctx


def describe_tls_error(exc: BaseException) -> str | None:
    """A short reason for a failed TLS handshake found in ``exc``'s chain ("certificate verify
    failed (self-signed certificate)", "certificate verify failed (Hostname mismatch, …)"), else None."""
    seen: BaseException | None = exc
    hops = 0
    while seen is not None and hops < 12:
        hops += 1
        if isinstance(seen, ssl.SSLCertVerificationError):
            detail = seen.verify_message or seen.reason or "unknown reason"
            return f"certificate verify failed ({detail})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS error ({seen.reason or seen})"
        nxt = seen.__cause__ or seen.__context__
        if nxt is None and seen.args and isinstance(seen.args[0], BaseException):
            nxt = seen.args[0]
        if nxt is None and hasattr(seen, "reason") and isinstance(getattr(seen, "reason"), BaseException):
            nxt = getattr(seen, "reason")
        seen = nxt if nxt is not seen else None
    return None
