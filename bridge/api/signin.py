"""The wallet sign-in page, ``http://127.0.0.1:PORT/signin`` (issue 8 item 1; PROTOCOL.md §8).

Wallets inject their EIP-6963 providers (or ``window.ethereum``) into this page, which is served by
the bridge on its own origin: no site script runs here, so no page can re-announce a proxy of the
wallet or answer for it. The page opens only from a one-time link (the extension's ``signin.link``,
``parley signin``), with a session of scope ``signin`` (:mod:`bridge.api.pages`).

JSON routes (all need the page session header; POSTs also JSON, our Origin and the CSRF header):

- ``GET  /api/signin``: who the bridge speaks for, this installation, the previous identity the user
  may revoke, the active installations of the current address;
- ``POST /api/signin/prepare {address}`` → the statement text to sign, with the address and the
  installation id the page shows before asking the wallet;
- ``POST /api/signin/complete {text, signature}`` → verified, published, adopted (never revokes);
- ``POST /api/signin/revoke-previous {address}``: the separate, confirmed revocation of the previous
  (generated) identity, signed with its key held here;
- ``POST /api/signin/revoke/prepare {installation_id}`` and ``/revoke/complete {text, signature}``:
  revoke an installation of a browser-wallet address; the wallet signs the revoke statement.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from bridge import identity
from bridge.api.pages import PageGuard, json_error, page
from bridge.api.wallet import WalletSignInError
from bridge.relay.client import RelayError, RelayUnavailable

__all__ = ["register_signin"]

SCOPE = "signin"


def register_signin(bp: Blueprint, api: Any, guard: PageGuard) -> None:
    """Mount ``/signin`` and ``/api/signin*`` on the local API blueprint."""

    def wallet() -> Any:
        if api.wallet is None:
            json_error(503, "unavailable", "this bridge cannot switch wallets")
        return api.wallet

    def failed(exc: WalletSignInError) -> Any:
        json_error(400, exc.reason, f"{exc}. Nothing was changed." if "nothing was changed" not in str(exc) else str(exc))

    @bp.get("/signin")
    def signin_page() -> Any:
        return page("signin.html")

    @bp.get("/api/signin")
    def signin_state() -> Any:
        guard.session(SCOPE)
        w = wallet()
        me = api.m_identity(None)
        installations: list[dict[str, Any]] | None
        try:
            active = w.active(me["address"])
            installations = [
                {"installation_id": iid, "issued_at": st.issued_at, "this": iid == me["installation_id"]}
                for iid, st in sorted(active.items(), key=lambda kv: kv[1].issued_at)
            ]
        except (RelayUnavailable, RelayError):
            installations = None
        return guard.ok(
            {
                **me,
                "wallet": str(w.home.identity().get("wallet") or "generated"),
                "previous_address": w.previous_identity(),
                "installations": installations,
            }
        )

    @bp.post("/api/signin/prepare")
    def signin_prepare() -> Any:
        body = guard.write(SCOPE)
        try:
            return guard.ok(wallet().prepare(body.get("address") if isinstance(body.get("address"), str) else ""))
        except identity.IdentityError:
            json_error(400, "bad-address", "the wallet gave no valid address")

    @bp.post("/api/signin/complete")
    def signin_complete() -> Any:
        body = guard.write(SCOPE)
        try:
            result = wallet().complete(body.get("text"), body.get("signature"))
        except WalletSignInError as exc:
            failed(exc)
        api.hub.publish("identity.changed", {k: result[k] for k in ("address", "did", "installation_id")})
        return guard.ok(result)

    @bp.post("/api/signin/revoke-previous")
    def signin_revoke_previous() -> Any:
        body = guard.write(SCOPE)
        try:
            return guard.ok(wallet().revoke_previous(body.get("address")))
        except WalletSignInError as exc:
            failed(exc)

    @bp.post("/api/signin/revoke/prepare")
    def signin_revoke_prepare() -> Any:
        body = guard.write(SCOPE)
        try:
            return guard.ok(wallet().prepare_revoke(body.get("installation_id")))
        except WalletSignInError as exc:
            failed(exc)

    @bp.post("/api/signin/revoke/complete")
    def signin_revoke_complete() -> Any:
        body = guard.write(SCOPE)
        try:
            return guard.ok(wallet().complete_revoke(body.get("text"), body.get("signature")))
        except WalletSignInError as exc:
            failed(exc)
