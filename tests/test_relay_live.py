"""A real relay on 127.0.0.1 with RelayClient and WebSocket subscriptions (docs/PROTOCOL.md §7)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import simple_websocket

from bridge.protocol.prekeys import Bundle
from bridge.relay.client import NotFound, RelayClient, RelayError, RelayUnavailable
from bridge.relay.server import RelaySettings, create_app
from bridge.relay.sqlite_store import SQLiteStorage
from bridge.relay.storage import Envelope
from tests.relay_fixtures import WALLET_ADDRESS, Installation, authorize_record, make_installation, make_upload, revoke_record
from werkzeug.serving import BaseWSGIServer, make_server

pytestmark = pytest.mark.timeout(120)


class LiveRelay:
    def __init__(self, tmp_path: Path, settings: RelaySettings | None = None) -> None:
        self.storage = SQLiteStorage(str(tmp_path / "live.db"))
        self.app = create_app(self.storage, settings=settings or RelaySettings(ws_poll_interval=0.2))
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.storage.close()
        self.thread.join(10)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveRelay]:
    r = LiveRelay(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def client(live: LiveRelay) -> Iterator[RelayClient]:
    c = RelayClient(live.url, timeout=10.0)
    yield c
    c.close()


def _register(client: RelayClient, inst: Installation) -> None:
    client.publish_identity(WALLET_ADDRESS, authorize_record(inst))


def test_client_roundtrip(client: RelayClient) -> None:
    assert client.health() == {"ok": True, "version": 1, "minor": 4}
    inst = make_installation()
    rec = authorize_record(inst)
    assert client.publish_identity(WALLET_ADDRESS, rec) == 1
    assert client.publish_identity(WALLET_ADDRESS.lower(), rec) == 1
    assert client.identity(WALLET_ADDRESS) == [rec]
    assert client.upload_prekeys(inst.iid, make_upload(inst, otpk_ids=range(2), pq_ids=range(1), issued_at=1)) == {"otpk": 2, "pq_otpk": 1}
    assert client.prekey_count(inst.iid) == {"otpk": 2, "pq_otpk": 1}
    bundle = Bundle.decode(client.claim(inst.iid))
    bundle.verify(inst.signing_pub)
    assert client.prekey_count(inst.iid) == {"otpk": 1, "pq_otpk": 0}
    with pytest.raises(NotFound) as exc:
        client.claim(make_installation().iid)
    assert exc.value.code == "no_prekeys" and exc.value.status == 404
    with pytest.raises(RelayError) as err:
        client.publish("parley.v1.inbox.nope", b"x")
    assert err.value.code == "bad_topic" and err.value.status == 400
    c1 = client.publish(inst.topic, b"one")
    c2 = client.publish(inst.topic, b"two")
    token = client.authenticate(inst.iid, inst.signing_priv)
    assert client.authenticate(inst.iid, inst.signing_priv) == token  # cached
    got = client.fetch(inst.topic, 0, token=token)
    assert [(e.cursor, e.payload, e.topic) for e in got] == [(c1, b"one", inst.topic), (c2, b"two", inst.topic)]
    assert client.fetch(inst.topic, c1, token=token)[0].payload == b"two"
    with pytest.raises(RelayError) as bad:
        client.fetch(inst.topic, 0, token="forged")
    assert bad.value.status == 401


def test_relay_unavailable_names_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    c = RelayClient(url, timeout=2.0)
    try:
        with pytest.raises(RelayUnavailable, match=f"127.0.0.1:{port}"):
            c.health()
        with pytest.raises(RelayUnavailable, match=f"127.0.0.1:{port}"):
            c.subscribe("parley.v1.inbox." + "0" * 32, 0, token="t")
    finally:
        c.close()


def test_subscription_backlog_then_live(client: RelayClient) -> None:
    inst = make_installation()
    _register(client, inst)
    c1 = client.publish(inst.topic, b"old-1")
    c2 = client.publish(inst.topic, b"old-2")
    token = client.authenticate(inst.iid, inst.signing_priv)
    received: queue.Queue[Envelope] = queue.Queue()
    with client.subscribe(inst.topic, c1, token=token) as sub:
        first = sub.receive(10.0)
        assert first is not None and (first.cursor, first.payload) == (c2, b"old-2")  # backlog after the cursor

        def reader() -> None:
            for env in sub:
                received.put(env)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        c3 = client.publish(inst.topic, b"live!")
        env = received.get(timeout=10.0)  # a deadline, no sleeps
        assert (env.cursor, env.payload, env.topic) == (c3, b"live!", inst.topic)
        assert sub.cursor == c3
    t.join(10)
    assert not t.is_alive()


def test_subscription_rejects_bad_auth_and_answers_ping(live: LiveRelay, client: RelayClient) -> None:
    inst, other = make_installation(), make_installation()
    _register(client, inst)
    _register(client, other)
    token = client.authenticate(inst.iid, inst.signing_priv)
    with pytest.raises(RelayError) as exc:
        client.subscribe(other.topic, 0, token=token)
    assert exc.value.code == "unauthorized"
    ws_url = live.url.replace("http://", "ws://") + "/v1/subscribe"
    for hello, code in (("not json", "bad_json"), (json.dumps({"token": token, "topic": "x", "after": 0}), "bad_topic"),
                        (json.dumps({"token": token, "topic": inst.topic, "after": -1}), "bad_request"), ("[" * 50, "bad_json")):
        ws = simple_websocket.Client.connect(ws_url)
        try:
            ws.send(hello)
            frame = json.loads(ws.receive(timeout=10))
            assert frame["type"] == "error" and frame["code"] == code
        finally:
            ws.close()
    ws = simple_websocket.Client.connect(ws_url)
    try:
        ws.send(json.dumps({"token": token, "topic": inst.topic, "after": 0}))
        assert json.loads(ws.receive(timeout=10)) == {"type": "ready"}
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.receive(timeout=10)) == {"type": "pong"}
    finally:
        ws.close()


def test_concurrent_http_claims_hand_out_each_key_once(tmp_path: Path) -> None:
    # 40 claims of one installation: above the default per-target claim burst, which is not under test here
    live = LiveRelay(tmp_path, RelaySettings(ws_poll_interval=0.2, claim_target_burst=100))
    client = RelayClient(live.url, timeout=10.0)
    try:
        _concurrent_claims(client, live)
    finally:
        client.close()
        live.stop()


def _concurrent_claims(client: RelayClient, live: LiveRelay) -> None:
    inst = make_installation()
    _register(client, inst)
    n = 30
    client.upload_prekeys(inst.iid, make_upload(inst, otpk_ids=range(n), pq_ids=range(n), issued_at=1))
    got: list[bytes] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        c = RelayClient(live.url)
        try:
            for _ in range(5):
                b = Bundle.decode(c.claim(inst.iid))
                if b.otpk is not None:
                    with lock:
                        got.append(b.otpk.pub)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(got) == n and len(set(got)) == n
    assert client.prekey_count(inst.iid) == {"otpk": 0, "pq_otpk": 0}


def test_live_rate_limit(tmp_path: Path) -> None:
    r = LiveRelay(tmp_path, RelaySettings(publish_burst=2, publish_rate=0.001))
    c = RelayClient(r.url)
    try:
        inst = make_installation()
        _register(c, inst)
        c.publish(inst.topic, b"1")
        c.publish(inst.topic, b"2")
        with pytest.raises(RelayError) as exc:
            c.publish(inst.topic, b"3")
        assert exc.value.status == 429 and exc.value.code == "rate_limited"
    finally:
        c.close()
        r.stop()


def test_serve_process_starts_and_stops_on_sigterm(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from bridge.relay.server import serve\n"
        "serve('127.0.0.1', 0, sys.argv[1], ready_callback=lambda h, p: print(p, flush=True))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, f"sqlite:///{tmp_path}/served.db"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parent.parent),
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until ready (or the process dies: empty line)
        assert line.strip().isdigit(), proc.stderr.read() if proc.stderr else ""
        c = RelayClient(f"http://127.0.0.1:{int(line)}")
        try:
            assert c.health()["ok"] is True
        finally:
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout.read() == ""  # serve prints nothing itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert (tmp_path / "served.db").exists()


def test_wallet_switch_publishes_with_the_token_another_thread_obtained(client: RelayClient, live: LiveRelay) -> None:
    """An engine keeps one RelayClient per thread: the subscriber thread authenticates, the thread
    that publishes the installation's authorization under a second wallet must still prove it."""
    from tests.relay_fixtures import OTHER_WALLET_ADDRESS, OTHER_WALLET_KEY

    inst = make_installation()
    _register(client, inst)
    other_thread_client = RelayClient(live.url)
    try:
        record = authorize_record(inst, OTHER_WALLET_KEY)
        with pytest.raises(RelayError) as err:  # no token anywhere yet: a third party could be asking
            other_thread_client.publish_identity(OTHER_WALLET_ADDRESS, record)
        assert (err.value.status, err.value.code) == (409, "installation_bound")
        client.authenticate(inst.iid, inst.signing_priv)
        assert other_thread_client.publish_identity(OTHER_WALLET_ADDRESS, record) == 1
    finally:
        other_thread_client.close()


@contextlib.contextmanager
def subscribed(live: LiveRelay) -> Iterator[tuple[RelayClient, Installation, simple_websocket.Client]]:
    """A client, a newly registered installation and its inbox subscription on ``live``, past "ready";
    everything closed (and ``live`` stopped) at the end."""
    client = RelayClient(live.url, timeout=10.0)
    try:
        inst = make_installation()
        _register(client, inst)
        token = client.authenticate(inst.iid, inst.signing_priv)
        ws = simple_websocket.Client.connect(live.url.replace("http://", "ws://") + "/v1/subscribe")
        try:
            ws.send(json.dumps({"token": token, "topic": inst.topic, "after": 0}))
            assert json.loads(ws.receive(timeout=10)) == {"type": "ready"}
            yield client, inst, ws
        finally:
            with contextlib.suppress(simple_websocket.ConnectionClosed):
                ws.close()
    finally:
        client.close()
        live.stop()


# --- issue 17: planted bugs M08 and M09 (tests/mutants/) ---------------------------------------


@pytest.mark.parametrize("forged", ["spk", "pq_otpk", "pq_lrpk"])
def test_upload_with_one_forged_prekey_signature_is_refused_whole(client: RelayClient, forged: str) -> None:
    """The outer signature covers the upload, but every prekey carries its own signature that claimers
    re-check: a relay that stored a prekey whose own signature is wrong would hand out bundles every
    sender refuses. The relay checks each one and stores nothing of such an upload."""
    from dataclasses import replace

    from bridge.protocol.prekeys import PrekeyUpload

    inst = make_installation()
    _register(client, inst)
    upload, _, _ = PrekeyUpload.parse_signed(make_upload(inst, otpk_ids=range(2), pq_ids=range(2)))
    bad = lambda k: replace(k, sig=bytes(64))  # noqa: E731
    if forged == "spk":
        upload = replace(upload, spk=bad(upload.spk))
    elif forged == "pq_otpk":
        upload = replace(upload, pq_otpks=(upload.pq_otpks[0], bad(upload.pq_otpks[1])))
    else:
        upload = replace(upload, pq_lrpk=bad(upload.pq_lrpk))
    with pytest.raises(RelayError) as exc:
        client.upload_prekeys(inst.iid, upload.sign(inst.signing_priv))  # the outer signature is genuine
    assert (exc.value.status, exc.value.code) == (400, "bad_signature")
    with pytest.raises(NotFound):
        client.claim(inst.iid)  # nothing of it was stored
    assert client.prekey_count(inst.iid) == {"otpk": 0, "pq_otpk": 0}
    # The same upload with every signature genuine is accepted (the test changes one thing only).
    assert client.upload_prekeys(inst.iid, make_upload(inst, otpk_ids=range(2), pq_ids=range(2))) == {"otpk": 2, "pq_otpk": 2}


def test_quiet_subscription_sleeps_between_polls_and_rechecks_only_every_interval(tmp_path: Path) -> None:
    """A quiet subscription costs no storage reads: after the backlog it sleeps in Storage.wait, and it
    reads its installation again only once ws_recheck_interval has passed (10,000 subscribers share
    one database)."""
    live = LiveRelay(tmp_path, RelaySettings(ws_poll_interval=0.05, ws_recheck_interval=3600))
    calls: dict[str, int] = {"installation": 0, "fetch": 0, "wait": 0}
    three_waits = threading.Event()

    def counted(name: str) -> None:
        real = getattr(live.storage, name)

        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[name] += 1
            if name == "wait" and calls["wait"] >= 3:
                three_waits.set()
            return real(*args, **kwargs)

        setattr(live.storage, name, wrapper)

    for name in calls:
        counted(name)
    with subscribed(live):
        looked_up = calls["installation"]  # the token check's lookups all precede "ready"
        assert three_waits.wait(10), f"the subscription never waited for storage: {calls}"
        assert calls["installation"] == looked_up, calls
        assert calls["fetch"] == 1, calls  # the (empty) backlog only


def test_subscription_closes_on_a_client_frame_over_64_kib(tmp_path: Path) -> None:
    """A subscriber may not make the relay buffer big frames: a client message of 64 KiB is read (and
    ignored: only small pings mean anything), one byte more closes the connection with 1009."""
    live = LiveRelay(tmp_path)
    with subscribed(live) as (_, _, ws):
        ws.send(b"x" * (64 * 1024))
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.receive(timeout=10)) == {"type": "pong"}
        ws.send(b"x" * (64 * 1024 + 1))
        # The relay may already have closed (it reads the frame at once): then this send fails, as
        # ConnectionClosed or, when the client's reader has closed the socket first, EBADF.
        with contextlib.suppress(simple_websocket.ConnectionClosed, OSError):
            ws.send(json.dumps({"type": "ping"}))
        with pytest.raises(simple_websocket.ConnectionClosed) as closed:
            frame = ws.receive(timeout=10)
            pytest.fail(f"still open after a 64 KiB + 1 byte frame: {frame!r}")
        assert closed.value.reason == 1009  # message too big


@pytest.mark.parametrize("poll", [0.05, 5.0])
def test_live_subscription_of_a_revoked_installation_is_closed(tmp_path: Path, poll: float) -> None:
    """A subscription stays open for hours: the relay re-checks, every ws_recheck_interval, that its
    installation is still authorized, and closes it once the wallet revoked it (the revoked
    installation's token must stop reading the inbox). The re-check is due on time even when the
    storage poll interval is longer (5.0 s, `parley relay`'s): the close comes within 3 s (a
    correctness bound, not a benchmark)."""
    live = LiveRelay(tmp_path, RelaySettings(ws_poll_interval=poll, ws_recheck_interval=0.2))
    with subscribed(live) as (client, inst, ws):
        client.publish(inst.topic, b"before the revocation")
        assert json.loads(ws.receive(timeout=10))["type"] == "envelope"
        client.publish_identity(WALLET_ADDRESS, revoke_record(inst))
        frames, closed = [], False
        try:
            while (raw := ws.receive(timeout=3.0)) is not None:  # a deadline: None means 3 s of silence
                frames.append(json.loads(raw))
        except simple_websocket.ConnectionClosed:
            closed = True
        assert closed, f"the subscription stayed open after the revocation: {frames}"
        # The error frame comes just before the close (the client may see the close first).
        assert frames in ([], [{"type": "error", "code": "unknown_installation", "message": "the installation was revoked"}]), frames


# --- issue 9: a subscription answers a client ping without waiting for its storage poll ---------

#: A correctness bound, not a benchmark: `parley relay` polls storage every ws_poll_interval = 5.0 s
#: (bridge/cli.py); a ping must be answered because it arrived, not because the poll timed out, so
#: its pong must come well inside one poll interval even on a loaded test machine.
PONG_BOUND = 1.5


def _timed_reply(ws: simple_websocket.Client, frame: dict[str, object], bound: float) -> dict[str, object]:
    """Send ``frame`` and return the next frame, failing if none comes within ``bound`` seconds."""
    ws.send(json.dumps(frame))
    raw = ws.receive(timeout=bound)
    assert raw is not None, f"no answer to {frame} within {bound} s"
    return dict(json.loads(raw))


@pytest.mark.parametrize("model", ["gevent", "threaded"])
def test_parley_relay_answers_a_ping_within_the_bound_and_still_delivers(tmp_path: Path, model: str) -> None:
    """`parley relay --server <model>` (ws_poll_interval 5.0 s): every ping is answered within
    PONG_BOUND of being sent, also right after a pong or an envelope (when the subscription has just
    gone back to waiting for storage), and a new envelope still arrives within the bound."""
    from tests.procs import Proc

    proc = Proc(["relay", "--port", "0", "--db", str(tmp_path / "relay.db"), "--server", model])
    try:
        url = proc.expect(r"relay listening on (http://\S+) ").group(1)
        client = RelayClient(url, timeout=10.0)
        try:
            inst = make_installation()
            _register(client, inst)
            token = client.authenticate(inst.iid, inst.signing_priv)
            ws = simple_websocket.Client.connect(url.replace("http://", "ws://") + "/v1/subscribe")
            try:
                ws.send(json.dumps({"token": token, "topic": inst.topic, "after": 0}))
                assert json.loads(ws.receive(timeout=10)) == {"type": "ready"}
                for _ in range(3):
                    assert _timed_reply(ws, {"type": "ping"}, PONG_BOUND) == {"type": "pong"}
                cursor = client.publish(inst.topic, b"live")
                raw = ws.receive(timeout=PONG_BOUND)
                assert raw is not None, f"the envelope was not delivered within {PONG_BOUND} s"
                env = json.loads(raw)
                assert (env["type"], env["cursor"], env["payload"]) == ("envelope", cursor, "bGl2ZQ==")
                for _ in range(2):
                    assert _timed_reply(ws, {"type": "ping"}, PONG_BOUND) == {"type": "pong"}
            finally:
                with contextlib.suppress(simple_websocket.ConnectionClosed):
                    ws.close()
        finally:
            client.close()
    finally:
        assert proc.stop() == 0, "".join(proc.output)


# --- issue 9: field types of the subscription frames -------------------------------------------


def _hello_answer(ws_url: str, frame: str | bytes) -> dict[str, object]:
    """The relay's first frame after ``frame`` as the opening message of a new subscription."""
    ws = simple_websocket.Client.connect(ws_url)
    try:
        ws.send(frame)
        raw = ws.receive(timeout=10)
        assert raw is not None, f"no answer to {frame!r}"
        return dict(json.loads(raw))
    finally:
        with contextlib.suppress(simple_websocket.ConnectionClosed):
            ws.close()


def test_subscribe_frame_takes_exactly_token_topic_and_after_with_their_types(live: LiveRelay, client: RelayClient) -> None:
    """The opening frame is exactly {"token": string, "topic": string, "after": integer 0..2^63-1}:
    a missing or repeated field, a token that is not a string, an "after" that is a bool, a float
    (even 1.0), a string, negative or 2^63 is refused with bad_request (a topic that is not an inbox
    topic string: bad_topic), as the HTTP bodies are (PROTOCOL.md §7 General). The relay's envelope
    frames carry an integer cursor, standard base64 and integer unix seconds."""
    inst = make_installation()
    _register(client, inst)
    token = client.authenticate(inst.iid, inst.signing_priv)
    ws_url = live.url.replace("http://", "ws://") + "/v1/subscribe"
    t = json.dumps(token)
    topic = json.dumps(inst.topic)
    cases: list[tuple[str | bytes, str]] = [
        (f'{{"token": {t}, "topic": {topic}}}', "bad_request"),  # "after" missing
        (f'{{"topic": {topic}, "after": 0}}', "bad_request"),  # "token" missing
        (f'{{"token": {t}, "topic": {topic}, "after": 0, "after": 0}}', "bad_request"),  # repeated
        (f'{{"token": {t}, "token": {t}, "topic": {topic}, "after": 0}}', "bad_request"),
        (f'{{"token": 5, "topic": {topic}, "after": 0}}', "bad_request"),
        (f'{{"token": null, "topic": {topic}, "after": 0}}', "bad_request"),
        (f'{{"token": {t}, "topic": {topic}, "after": 0, "x": 1}}', "bad_request"),
        (f'{{"token": {t}, "topic": 5, "after": 0}}', "bad_topic"),
        (f'{{"token": {t}, "after": 0}}', "bad_request"),  # "topic" missing
        (f'{{"token": {t}, "topic": {topic}, "after": NaN}}', "bad_json"),
        ("[]", "bad_request"),
        (json.dumps({"token": token, "topic": inst.topic, "after": 0}).encode(), "bad_request"),  # a binary frame
    ]
    for after in (True, False, 1.0, 1.5, "1", -1, 2**63, None, [0]):
        cases.append((json.dumps({"token": token, "topic": inst.topic, "after": after}), "bad_request"))
    for frame, code in cases:
        answer = _hello_answer(ws_url, frame)
        assert answer.get("type") == "error" and answer.get("code") == code, (frame, answer)
        assert isinstance(answer.get("message"), str) and answer["message"], answer
    c1 = client.publish(inst.topic, b"\x00\xff envelope")
    for after in (0, 2**63 - 1):  # the largest accepted cursor: nothing after it
        ws = simple_websocket.Client.connect(ws_url)
        try:
            ws.send(json.dumps({"token": token, "topic": inst.topic, "after": after}))
            assert json.loads(ws.receive(timeout=10)) == {"type": "ready"}
            if after == 0:
                env = json.loads(ws.receive(timeout=10))
                assert set(env) == {"type", "cursor", "payload", "received_at"}
                assert type(env["cursor"]) is int and env["cursor"] == c1
                assert env["payload"] == "AP8gZW52ZWxvcGU="  # standard base64 with padding
                assert type(env["received_at"]) is int  # unix seconds
                assert abs(env["received_at"] - live.storage.fetch(inst.topic, 0, 1)[0].received_at) == 0
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.receive(timeout=10)) == {"type": "pong"}
        finally:
            with contextlib.suppress(simple_websocket.ConnectionClosed):
                ws.close()


@pytest.mark.parametrize("relay_version", ["1.4", "1.3"])
def test_client_publishes_a_batch_and_falls_back_to_single_publishes_on_an_older_relay(tmp_path: Path, relay_version: str) -> None:
    """RelayClient.publish_envelopes: one request to a 1.4 relay; a relay before 1.4 answers the route
    404 not_found, and the client then publishes one by one (and remembers). Either way the published
    prefix, in order, and the refusal that stopped it."""
    from tests.relay_fixtures import serve_storage, unlimited_settings

    seen: list[str] = []

    def older(app):  # type: ignore[no-untyped-def]
        def wsgi(environ, start_response):  # type: ignore[no-untyped-def]
            seen.append(environ["PATH_INFO"])
            if relay_version == "1.3" and environ["PATH_INFO"] == "/v1/envelopes/batch":
                start_response("404 NOT FOUND", [("Content-Type", "application/json")])
                return [b'{"error": {"code": "not_found", "message": "no such endpoint"}}']
            return app(environ, start_response)
        return wsgi

    storage = SQLiteStorage(str(tmp_path / "r.db"))
    try:
        with serve_storage(storage, unlimited_settings(topic_max_envelopes=3), wrap=older) as url:
            client = RelayClient(url, timeout=10.0)
            inst, gone = make_installation(), make_installation()
            _register(client, inst)
            done, refused = client.publish_envelopes([(inst.topic, b"one"), (inst.topic, b"two")])
            assert refused is None and [p.logs for p in done] == [{WALLET_ADDRESS: 1}] * 2
            done2, refused = client.publish_envelopes([(inst.topic, b"three"), (gone.topic, b"x"), (inst.topic, b"never")])
            assert len(done2) == 1 and isinstance(refused, NotFound) and refused.code == "unknown_installation"
            done3, refused = client.publish_envelopes([(inst.topic, b"four")])  # the quota (3) is full
            assert done3 == [] and refused is not None and (refused.status, refused.code) == (429, "inbox_full")
            assert url in str(refused)  # a refusal names its relay
            token = client.authenticate(inst.iid, inst.signing_priv)
            got = client.fetch(inst.topic, 0, token=token)
            assert [(e.cursor, e.payload) for e in got] == [(p.cursor, t) for p, t in zip(done + done2, (b"one", b"two", b"three"))]
            batches = seen.count("/v1/envelopes/batch")
            assert (batches, seen.count("/v1/envelopes")) == ((3, 0) if relay_version == "1.4" else (1, 5))  # asked once, then remembered
            with pytest.raises(ValueError):
                client.publish_envelopes([])
            client.close()
    finally:
        storage.close()


def test_client_refuses_a_malformed_batch_answer(tmp_path: Path) -> None:
    """A hostile relay's batch answer: more cursors than envelopes, a non-integer cursor, a short answer with no reason."""
    from tests.relay_fixtures import serve_storage, unlimited_settings

    answers = [b'{"cursors": [1, 2, 3]}', b'{"cursors": ["1"]}', b'{"cursors": []}', b'{"cursors": [], "refused": {"status": 200}}',
               b'{"cursors": [7], "refused": {"index": 1, "status": 429, "code": "full\\u001b[2J", "message": "go\\u0007 away"}}']

    def hostile(app):  # type: ignore[no-untyped-def]
        def wsgi(environ, start_response):  # type: ignore[no-untyped-def]
            if environ["PATH_INFO"] == "/v1/envelopes/batch":
                start_response("200 OK", [("Content-Type", "application/json")])
                return [answers.pop(0)]
            return app(environ, start_response)
        return wsgi

    storage = SQLiteStorage(str(tmp_path / "r.db"))
    try:
        with serve_storage(storage, unlimited_settings(), wrap=hostile) as url:
            client = RelayClient(url, timeout=10.0)
            topic = make_installation().topic
            for _ in range(4):
                with pytest.raises(RelayUnavailable, match="malformed answer"):
                    client.publish_envelopes([(topic, b"a"), (topic, b"b")])
            done, refused = client.publish_envelopes([(topic, b"a"), (topic, b"b")])  # a refusal with control characters
            assert [p.cursor for p in done] == [7] and refused is not None
            assert (refused.status, refused.code, refused.message) == (429, "full?[2J", "go? away")
            client.close()
    finally:
        storage.close()


def test_drain_takes_the_good_envelopes_of_a_burst_before_a_malformed_one(tmp_path: Path) -> None:
    """A relay sends a backlog burst whose fourth frame is malformed: Subscription.drain returns the
    three good envelopes (the daemon takes them in, its cursor moves past them) and the next receive
    raises, instead of the whole burst being dropped and fetched again forever."""
    import base64

    from flask import Flask
    from flask_sock import Sock

    app = Flask("hostile-relay")
    sock = Sock(app)
    topic = make_installation().topic

    @sock.route("/v1/subscribe")
    def subscribe(ws):  # type: ignore[no-untyped-def]
        ws.receive(timeout=10)  # the hello
        ws.send(json.dumps({"type": "ready"}))
        for cursor in (1, 2, 3):
            payload = base64.b64encode(b"sealed %d" % cursor).decode()
            ws.send(json.dumps({"type": "envelope", "cursor": cursor, "payload": payload, "received_at": 1_800_000_000}))
        ws.send(json.dumps({"type": "envelope", "cursor": "four", "payload": "!", "received_at": 0}))
        ws.receive(timeout=10)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        client = RelayClient(f"http://127.0.0.1:{server.server_port}", timeout=10.0)
        with client.subscribe(topic, 0, token="t") as sub:
            got: list[int] = []
            env = sub.receive(10.0)
            while env is not None:  # the frames may still be on their way: drain what has come each time
                got += [e.cursor for e in sub.drain(env, 100)]
                env = sub.receive(10.0) if len(got) < 3 else None
            assert got == [1, 2, 3] and sub.cursor == 3
            with pytest.raises(RelayUnavailable, match="malformed envelope"):
                sub.receive(10.0)
        client.close()
    finally:
        server.shutdown()
        server.server_close()
