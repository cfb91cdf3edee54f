"""Sign in with the browser wallet, in-process (bridge/api/wallet.py; PROTOCOL.md §3 and §8).

:class:`WalletSignIn` over a real engine, a real home directory and an in-process relay; the "browser
wallet" is an eth-account key held by the test, which signs the prepared text with EIP-191
``personal_sign`` as a wallet does. The page and the browser are covered by e2e/test_wallet.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from bridge import identity
from bridge.api.wallet import NothingToRevoke, UnknownStatement, WalletSignIn, WrongSigner
from bridge.engine import Engine
from bridge.home import Home
from tests.engines import close_engines, make_engine  # noqa: F401 (close_engines: autouse fixture)
from tests.relay_fixtures import serve_relay

__all__: list[str] = []


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_relay(tmp_path_factory.mktemp("relay") / "relay.db") as url:
        yield url


def bridge_home(tmp_path: Path, eng: Engine) -> Home:
    """A home whose identity.json names ``eng``'s generated wallet, as ``parley init`` leaves it."""
    home = Home(tmp_path / "home")
    home.create()
    address, record = eng.identity_pair()
    home.identity_file.write_text(json.dumps({"address": address, "installation_id": eng.installation_id, "record": record.hex()}))
    return home


def personal_sign(key: bytes, text: str) -> str:
    return "0x" + bytes(Account.sign_message(encode_defunct(text=text), key).signature).hex()


def test_sign_in_publishes_the_wallet_signed_record_switches_the_engine_then_revokes_the_previous_identity(
    tmp_path: Path, relay_url: str
) -> None:
    eng = make_engine(tmp_path / "bridge.db", relay_url)
    eng.token()  # as the running daemon, which holds a relay token for its inbox: the relay's proof of the installation
    home = bridge_home(tmp_path, eng)
    signin = WalletSignIn(eng, home, eng.secrets)
    generated, iid = eng.address, eng.installation_id
    user, other = Account.create(), Account.create()
    assert signin.previous_identity() is None
    with pytest.raises(NothingToRevoke):
        signin.revoke_previous(generated)  # the identity the bridge speaks for is not a previous one

    # A signature by another account than the prepared one changes nothing.
    prep = signin.prepare(user.address.lower())
    with pytest.raises(WrongSigner):
        signin.complete(prep["text"], personal_sign(other.key, prep["text"]))
    assert eng.address == generated and home.identity()["address"] == generated and signin.active(user.address) == {}

    prep = signin.prepare(user.address.lower())
    assert prep["address"] == user.address and prep["installation_id"] == iid
    out = signin.complete(prep["text"], personal_sign(user.key, prep["text"]))
    assert out == {"address": user.address, "did": identity.did(user.address), "installation_id": iid, "previous_address": generated}
    assert eng.address == user.address
    saved = home.identity()
    assert (saved["address"], saved["wallet"], saved["previous_address"]) == (user.address, "browser", generated)
    record = bytes.fromhex(saved["record"])
    statement = identity.verify(identity.SignedStatement.from_record(record))
    assert (statement.action, statement.address, statement.installation_id) == ("authorize", user.address, iid)
    assert eng.identity_pair() == (user.address, record)
    assert set(signin.active(user.address)) == {iid}  # published on the relay
    with pytest.raises(UnknownStatement):
        signin.complete(prep["text"], personal_sign(user.key, prep["text"]))  # single use

    # The generated identity is revoked only for the address the user confirmed.
    assert signin.previous_identity() == generated
    for wrong in (user.address, None, generated[:-1]):
        with pytest.raises(NothingToRevoke):
            signin.revoke_previous(wrong)
    assert set(signin.active(generated)) == {iid}
    assert signin.revoke_previous(generated.lower()) == {"revoked": iid, "address": generated}
    assert signin.active(generated) == {} and signin.previous_identity() is None
    with pytest.raises(NothingToRevoke):
        signin.revoke_previous(generated)  # nothing left to revoke
    assert set(signin.active(user.address)) == {iid}
