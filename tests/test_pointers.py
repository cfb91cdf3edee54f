"""Relay pointers (bridge/resolve/pointers.py): the ENS text record and the Lens metadata attribute
``parley.relays`` against an in-process chain (tests/contracts/Names.sol) and the fake Lens API
(tests/fakes/names.py), and the parser against hostile text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.resolve import ResolverSettings
from bridge.resolve.pointers import (
    LENS_POINTER_QUERY,
    MAX_POINTER_CHARS,
    canonical_relay_url,
    parse_relay_pointer,
    relays_from_ens,
    relays_from_lens,
    relays_from_settings,
)
from bridge.resolve.sources import SourceError
from tests.fakes.chain import ChainServer, EnsNames
from tests.fakes.names import LensApi

ALICE, IMPOSTOR, CAROL, NOBODY, BOB = (Account.create().address for _ in range(5))
ALICE_POINTER = "HTTPS://Relay-1.Example.org/ ,\n http://relay2.example.org:8080/parley/  javascript:alert(1)"
ALICE_RELAYS = ["https://relay-1.example.org", "http://relay2.example.org:8080/parley"]


# --- the parser -------------------------------------------------------------------------------------


def test_parse_canonical_forms_order_dedupe_and_cap() -> None:
    assert parse_relay_pointer(ALICE_POINTER) == ALICE_RELAYS
    # case, default port, trailing slash: one relay, kept once, in the pointer's order
    assert parse_relay_pointer("https://B.example https://a.example:443/ HTTPS://b.EXAMPLE/ http://a.example:80") == [
        "https://b.example", "https://a.example", "http://a.example",
    ]
    assert parse_relay_pointer("https://[0:0::1]:8443/v1/ https://10.0.0.1:9/ http://xn--bcher-kva.example") == [
        "https://[::1]:8443/v1", "https://10.0.0.1:9", "http://xn--bcher-kva.example",
    ]
    many = " ".join(f"https://r{i}.example" for i in range(9))
    assert parse_relay_pointer(many) == [f"https://r{i}.example" for i in range(5)]
    # invalid entries do not count towards the five
    assert parse_relay_pointer("ftp://x.example " * 10 + many) == [f"https://r{i}.example" for i in range(5)]
    assert parse_relay_pointer("") == parse_relay_pointer(" , \n") == parse_relay_pointer(None) == parse_relay_pointer(5) == []


@pytest.mark.parametrize("bad", [
    "javascript:alert(1)", "JAVASCRIPT://x.example", "data:text/html,x", "ftp://x.example", "ws://x.example", "file:///etc/passwd",
    "//x.example", "x.example", "https://", "https:///path", "http:x.example",
    "https://user@x.example", "https://user:pw@x.example/", "https://x.example@evil.example",
    "https://x.example/?q=1", "https://x.example?", "https://x.example/#frag", "https://x.example#",
    "https://x.example\\evil.example", "https://x.example/a\x00b", "https://x.ex\x07ample", "https://x.example/\x7f",
    "https://bücher.example", "https://\u212a.example", "https://x.example/caf\u00e9", "https://\u0445.example",
    "https://x.example/a/../b", "https://x.example/./b", "https://x.example//b", "https://x.example/a%zz",
    "https://x.example:0", "https://x.example:65536", "https://x.example:", "https://x.example:http", "https://x.example:1:2",
    "https://-x.example", "https://x-.example", "https://x..example", "https://.x.example", "https://x.example.",
    "https://" + "a" * 64 + ".example", "https://1.2.3", "https://256.1.1.1", "https://x.123",
    "https://[::1", "https://[zz::1]", "https://[fe80::1%eth0]", "https://::1",
    "https://x.example/" + "p" * 190,
])
def test_parse_drops_invalid_entries(bad: str) -> None:
    assert canonical_relay_url(bad) is None
    assert parse_relay_pointer(f"{bad} https://ok.example") == ["https://ok.example"]


def test_parse_length_limits() -> None:
    url_200 = "https://x.example/" + "p" * (200 - len("https://x.example/"))
    assert parse_relay_pointer(url_200) == [url_200]
    assert parse_relay_pointer(url_200 + "q") == []
    # the text is cut at MAX_POINTER_CHARS: a relay cut in two is dropped, not kept truncated
    head = ("https://a.example" + " " * MAX_POINTER_CHARS)[: MAX_POINTER_CHARS - 10]  # ends in a space
    assert parse_relay_pointer(head + "https://abcdefghij.example") == ["https://a.example"]
    # ... one ending exactly at the cut is kept
    b = "https://b.example"
    exact = head[: MAX_POINTER_CHARS - len(b)] + b
    assert len(exact) == MAX_POINTER_CHARS and parse_relay_pointer(exact + " https://c.example") == ["https://a.example", b]
    # huge hostile inputs: a million characters without a separator, 1000 entries, control characters
    assert parse_relay_pointer("https://" + "a" * 1_000_000) == []
    assert parse_relay_pointer(",".join(f"https://r{i}.example" for i in range(1000))) == [f"https://r{i}.example" for i in range(5)]
    # control characters are not separators: the entry that holds one is dropped
    assert parse_relay_pointer("\x1b[2Jhttps://x.example\r\nhttps://y.example\x00\thttps://z.example\x0b\x0chttps://w.example") == [
        "https://z.example", "https://w.example"]


_HOSTS = st.one_of(
    st.sampled_from(["x.example", "X.Example", "relay.example.org", "127.0.0.1", "[::1]", "[0:0::1]", "bücher.example", "a..b", "-a.b"]),
    st.from_regex(r"[a-zA-Z0-9-]{1,12}(\.[a-zA-Z0-9-]{1,12}){0,3}", fullmatch=True),
)
_URLISH = st.builds(
    lambda scheme, userinfo, host, port, path, tail: f"{scheme}://{userinfo}{host}{port}{path}{tail}",
    st.sampled_from(["http", "https", "HTTPS", "Http", "javascript", "ftp", "ws"]),
    st.sampled_from(["", "", "", "u@", "u:p@"]),
    _HOSTS,
    st.one_of(st.just(""), st.integers(-1, 70000).map(lambda p: f":{p}"), st.sampled_from([":", ":80", ":443", ":x"])),
    st.one_of(st.just(""), st.lists(st.sampled_from(["a", "v1", ".", "..", "", "%41", "%zz", "é", "~x"]), max_size=4).map(lambda s: "/" + "/".join(s))),
    st.sampled_from(["", "", "/", "//", "?q", "#f", "\\x"]),
)
_VALID = st.builds(lambda host, path: f"https://{host}{path}", st.from_regex(r"[a-z]{1,6}\.(example|test)", fullmatch=True),
                   st.sampled_from(["", "/", "/v1", "/a/b/"]))
_TEXT = st.lists(st.one_of(_URLISH, _VALID, _VALID, st.text(max_size=40)), max_size=30).flatmap(
    lambda parts: st.lists(st.sampled_from([",", " ", "\n", ", ", "\t", ",,"]), min_size=len(parts), max_size=len(parts)).map(
        lambda seps: "".join(p + s for p, s in zip(parts, seps))
    )
)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_parse_property_output_is_canonical_bounded_and_unique(text: str) -> None:
    out = parse_relay_pointer(text)
    assert len(out) <= 5 and len(set(out)) == len(out)
    for url in out:
        assert url.startswith(("http://", "https://")) and len(url) <= 200
        assert not url.endswith("/") and url.isascii() and url.isprintable() and not any(c in url for c in "?#@, ")
        scheme_host = url.split("/", 3)[:3]
        assert "/".join(scheme_host) == "/".join(scheme_host).lower()
        assert canonical_relay_url(url) == url
    # canonical: parsing the output again gives the output
    assert parse_relay_pointer(" ".join(out)) == out
    # every relay named came from the text (nothing invented): its host appears there, ignoring case
    for url in out:
        host = url.split("/")[2].rsplit(":", 1)[0] if not url.split("/")[2].startswith("[") else ""
        assert host.lower() in text.lower()


# --- ENS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ens() -> Iterator[tuple[ChainServer, EnsNames]]:
    """alice.eth → ALICE (primary name, with a pointer); IMPOSTOR claims alice.eth as its primary name;
    carol.eth → CAROL (primary name, no pointer); BOB has no name; bob.eth → BOB with a pointer but no
    reverse record; NOBODY claims a name that is not valid."""
    with ChainServer(chain_id=1) as c:
        names = EnsNames(c)
        names.set_addr("alice.eth", ALICE)
        names.set_text("alice.eth", "parley.relays", ALICE_POINTER)
        names.set_text("alice.eth", "url", "https://not-a-pointer.example")
        names.set_reverse(ALICE, "alice.eth")
        names.set_reverse(IMPOSTOR, "alice.eth")
        names.set_addr("carol.eth", CAROL)
        names.set_reverse(CAROL, "carol.eth")
        names.set_addr("bob.eth", BOB)
        names.set_text("bob.eth", "parley.relays", "https://bob-relay.example")
        names.set_reverse(NOBODY, "not a name!")
        yield c, names


def ens_relays(e: tuple[ChainServer, EnsNames], address: str, name: str | None = None) -> list[str]:
    c, names = e
    return relays_from_ens(c.url, address, name=name, registry=names.registry, universal_resolver=names.universal)


def test_ens_text_record_of_the_given_name(ens: tuple[ChainServer, EnsNames]) -> None:
    assert ens_relays(ens, ALICE, "alice.eth") == ALICE_RELAYS
    assert ens_relays(ens, BOB, "bob.eth") == ["https://bob-relay.example"]  # no reverse record needed
    assert ens_relays(ens, ALICE.lower(), "alice.eth") == ALICE_RELAYS  # any spelling of the address
    # the name no longer resolves to this address (a stale resolution): its record is not this wallet's
    assert ens_relays(ens, IMPOSTOR, "alice.eth") == []
    assert ens_relays(ens, CAROL, "carol.eth") == []  # no record
    assert ens_relays(ens, ALICE, "nobody.eth") == []  # no such name


def test_ens_primary_name_by_reverse_record(ens: tuple[ChainServer, EnsNames]) -> None:
    assert ens_relays(ens, ALICE) == ALICE_RELAYS
    # anyone can claim any primary name: IMPOSTOR's reverse record says alice.eth, which resolves to ALICE
    assert ens_relays(ens, IMPOSTOR) == []
    assert ens_relays(ens, CAROL) == []  # a primary name without the record
    assert ens_relays(ens, BOB) == []  # no reverse record
    assert ens_relays(ens, NOBODY) == []  # a reverse record naming an invalid name


def test_ens_unreachable_raises(ens: tuple[ChainServer, EnsNames]) -> None:
    c, _ = ens
    c.down()
    try:
        for name in ("alice.eth", None):
            with pytest.raises(SourceError, match=r"^ENS: ") as exc:
                ens_relays(ens, ALICE, name)
            assert exc.value.source == "ENS"
    finally:
        c.up()
    with ChainServer() as gone:
        url = gone.url
    with pytest.raises(SourceError, match="cannot reach") as exc:
        relays_from_ens(url, ALICE, registry=ens[1].registry, universal_resolver=ens[1].universal)
    assert exc.value.source == "ENS"
    with pytest.raises(SourceError, match="not an address"):
        ens_relays(ens, "0x1234")


# --- Lens -------------------------------------------------------------------------------------------


@pytest.fixture
def lens() -> Iterator[LensApi]:
    with LensApi() as api:
        yield api


def test_lens_attribute_present(lens: LensApi) -> None:
    account = Account.create().address
    lens.accounts["alice"] = (account, ALICE)
    lens.set_attributes(account, {"website": "https://alice.example", "parley.relays": ALICE_POINTER})
    assert relays_from_lens(lens.url, account.lower()) == ALICE_RELAYS
    method, path, body = lens.requests[-1]
    assert (method, path) == ("POST", "/graphql")
    assert body == {"query": LENS_POINTER_QUERY, "variables": {"request": {"address": account}}}
    # the first attribute with the key counts
    lens.metadata[account]["attributes"].append({"type": "STRING", "key": "parley.relays", "value": "https://later.example"})
    assert relays_from_lens(lens.url, account) == ALICE_RELAYS


def test_lens_attribute_absent_or_malformed(lens: LensApi) -> None:
    account = Account.create().address
    assert relays_from_lens(lens.url, account) == []  # no such account
    lens.accounts["bob"] = (account, BOB)
    assert relays_from_lens(lens.url, account) == []  # an account without metadata
    lens.set_attributes(account, {"website": "https://bob.example"})
    assert relays_from_lens(lens.url, account) == []  # metadata without the attribute
    lens.set_attributes(account, {"parley.relays": ""})
    assert relays_from_lens(lens.url, account) == []
    lens.set_attributes(account, {"parley.relays": "javascript:alert(1) https://u@x.example \x00" + "x" * 100_000})
    assert relays_from_lens(lens.url, account) == []
    for value in (None, 5, ["https://x.example"], {"url": "https://x.example"}):
        lens.metadata[account]["attributes"] = [{"type": "JSON", "key": "parley.relays", "value": value}]
        assert relays_from_lens(lens.url, account) == []
    lens.metadata[account]["attributes"] = ["parley.relays", None, {"key": None}, {"type": "STRING", "key": "parley.relays", "value": "https://x.example"}]
    assert relays_from_lens(lens.url, account) == ["https://x.example"]  # junk entries skipped
    # an answer of the wrong shape: the source failed
    for metadata in ({"attributes": None}, {"attributes": "parley.relays=https://x.example"}, "https://x.example", []):
        lens.metadata[account] = metadata
        with pytest.raises(SourceError, match="^Lens API: answered malformed account metadata"):
            relays_from_lens(lens.url, account)


def test_lens_answer_for_another_account_is_refused(lens: LensApi, monkeypatch: pytest.MonkeyPatch) -> None:
    account = Account.create().address
    lens.set_attributes(account, {"parley.relays": "https://x.example"})
    assert relays_from_lens(lens.url, account) == ["https://x.example"]
    monkeypatch.setattr(lens, "_account", lambda local, address: {"address": BOB, "owner": BOB, "username": None})
    with pytest.raises(SourceError, match="another account"):
        relays_from_lens(lens.url, account)


def test_lens_unreachable_raises(lens: LensApi) -> None:
    account = Account.create().address
    lens.down()
    with pytest.raises(SourceError, match=r"^Lens API: .*HTTP 503") as exc:
        relays_from_lens(lens.url, account)
    assert exc.value.source == "Lens API"
    with LensApi() as gone:
        url = gone.url
    with pytest.raises(SourceError, match="cannot reach") as exc:
        relays_from_lens(url, account)
    assert exc.value.source == "Lens API"
    with pytest.raises(SourceError, match="not an address"):
        relays_from_lens(lens.url, "alice")


# --- both, with the resolver's settings --------------------------------------------------------------


def test_relays_from_settings_merges_sources_and_reports_failures(ens: tuple[ChainServer, EnsNames], lens: LensApi) -> None:
    c, names = ens
    lens.set_attributes(ALICE, {"parley.relays": "https://relay-1.example.org/ https://lens-a.example https://lens-b.example https://lens-c.example https://lens-d.example"})
    both = ResolverSettings(lens_api_url=lens.url, eth_rpc_url=c.url, ens_registry=names.registry, ens_universal_resolver=names.universal)
    # ENS first, then Lens; a relay named by both once; at most five
    assert relays_from_settings(both, ALICE) == (ALICE_RELAYS + ["https://lens-a.example", "https://lens-b.example", "https://lens-c.example"], [])
    assert relays_from_settings(both, BOB, ens_name="bob.eth") == (["https://bob-relay.example"], [])
    lens.down()
    relays, errors = relays_from_settings(both, ALICE)
    assert relays == ALICE_RELAYS and [e.source for e in errors] == ["Lens API"]
    lens.up()
    assert relays_from_settings(ResolverSettings(lens_api_url=lens.url), ALICE)[0][0] == "https://relay-1.example.org"
    assert relays_from_settings(ResolverSettings(), ALICE) == ([], [])  # nothing configured: nothing asked
