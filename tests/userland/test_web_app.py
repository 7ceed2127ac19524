"""`llmos web`'s endpoints through Starlette's test client, on the shared kernel: the token gate,
the state, a process's details, the policy switch, the Perfetto download, the event stream."""

import json
import re
import time

import pytest
import torch

from llmos.userland import Client
from llmos.userland.cli.main import main
from llmos.userland.cli.web import WebServer
from llmos.userland.web.app import create_app
from llmos.userland.web.auth import is_loopback

pytest.importorskip("httpx", reason="Starlette's test client needs httpx (pip install -e '.[dev]')")
from starlette.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

TOKEN = "test-token-0123456789"
PATHS = ("/", "/api/state", "/api/events", "/api/proc/1", "/api/trace.json", "/static/console.js")


@pytest.fixture(scope="module")
def web(kernel):
    """The console (admin: the tests own the kernel) under the test client, token in a header."""
    app = create_app(kernel.address, token=TOKEN, admin=True, kernel="shared", interval=0.1)
    with TestClient(app, headers={"X-Llmos-Token": TOKEN}) as tc:
        yield tc


def state_until(web, predicate, timeout: float = 15.0) -> dict:
    """GET /api/state until predicate(state) holds."""
    deadline = time.monotonic() + timeout
    while True:
        state = web.get("/api/state").json()
        if "procs" in state and predicate(state):
            return state
        assert time.monotonic() < deadline, f"the state never matched; last: {json.dumps(state)[:2000]}"
        time.sleep(0.1)


def test_every_path_refuses_a_missing_or_wrong_token(web):
    for path in PATHS:
        bare = web.get(path, headers={"X-Llmos-Token": ""})
        assert bare.status_code == 403 and "token" in bare.text, path
        assert web.get(path, headers={"X-Llmos-Token": TOKEN + "x"}).status_code == 403
    assert web.get("/?token=nope", headers={"X-Llmos-Token": ""}).status_code == 403
    assert web.post("/api/sched", json={"device": "cpu0", "policy": "rr"}, headers={"X-Llmos-Token": ""}).status_code == 403
    with pytest.raises(WebSocketDisconnect) as closed:  # nor does a WebSocket slip past
        with web.websocket_connect("/api/events", headers={"X-Llmos-Token": ""}) as ws:
            ws.receive_text()
    assert closed.value.code == 1008  # the gate's "policy violation", not the router's "no such socket"


def test_the_token_in_the_url_becomes_a_strict_cookie_for_the_page_and_its_assets(kernel):
    app = create_app(kernel.address, token=TOKEN, kernel="shared", interval=0.2)
    with TestClient(app) as tc:
        page = tc.get(f"/?token={TOKEN}")
        assert page.status_code == 200
        cookie = page.headers["set-cookie"].lower()
        assert "llmos_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            assert asset.startswith("/"), f"{asset}: every asset is served here (no CDN)"
            assert tc.get(asset).status_code == 200  # the cookie carries the token now
        assert "EventSource" in tc.get("/static/console.js").text
        tc.cookies.clear()
        assert tc.get("/static/console.js").status_code == 403


def test_state_shows_processes_devices_and_each_kv_block_by_owner(kernel, web):
    with Client(kernel.address, name="watched") as c:
        c.put(torch.ones(256))
        pool = c.kv_pool("cpu", layers=1, kv_heads=1, head_dim=8, blocks=4)
        seq = c.kv_alloc("cpu", pool.pool, 20)
        state = state_until(web, lambda s: any(p["name"] == "watched" and p["kv_blocks"] == 2 for p in s["procs"]))
        row = next(p for p in state["procs"] if p["pid"] == c.pid)
        assert row["state"] == "running" and row["mem"] >= 1024
        cpu = next(d for d in state["devices"] if d["name"] == "cpu0")
        assert cpu["policy"] in cpu["policies"] and cpu["node"] == "local" and cpu["capacity"] > 0
        (drawn,) = [p for m in state["memory"] for p in m["pools"] if p["pool"] == pool.pool]
        assert [drawn["owners"][b] for b in seq.table] == [c.pid, c.pid] and drawn["marks"].count("u") == 2
        assert state["admin"] is True and state["kernel"]["name"] == "shared"


def test_a_process_detail_lists_its_handles_and_an_unknown_pid_is_404(kernel, web):
    with Client(kernel.address, name="detailed") as c:
        ref = c.put(torch.ones(3, 5))
        detail = web.get(f"/api/proc/{c.pid}").json()
        assert detail["name"] == "detailed"
        (h,) = [h for h in detail["handles"] if h["handle"] == ref.handle]
        assert h["kind"] == "tensor" and h["shape"] == [3, 5]
    missing = web.get("/api/proc/999999")
    assert missing.status_code == 404 and missing.json()["errno"] == "ESRCH"


def test_the_policy_switch_calls_sched_set_and_refuses_what_it_should(kernel, web, client):
    try:
        switched = web.post("/api/sched", json={"device": "cpu0", "policy": "rr"})
        assert switched.status_code == 200 and switched.json()["policy"] == "rr"
        assert client.sched("cpu0").policy == "rr"
        state_until(web, lambda s: next(d for d in s["devices"] if d["name"] == "cpu0")["policy"] == "rr")
        bad = web.post("/api/sched", json={"device": "cpu0", "policy": "nosuch"})
        assert bad.status_code == 400 and bad.json()["errno"] == "EINVAL"
        assert web.post("/api/sched", json={"device": "nodev9", "policy": "rr"}).status_code == 404
        assert web.post("/api/sched", json={"device": 3}).status_code == 400
        assert web.post("/api/sched", content="device=cpu0&policy=fcfs",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
        assert web.post("/api/sched", json={"device": "cpu0", "policy": "fcfs"},
                        headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.sched("cpu0").policy == "rr"
    finally:
        client.sched_set("cpu0", "fcfs")
    read_only = create_app(kernel.address, token=None, admin=False, kernel="shared")
    with TestClient(read_only) as tc:
        refused = tc.post("/api/sched", json={"device": "cpu0", "policy": "rr"})
        assert refused.status_code == 403 and "read-only" in refused.json()["error"]
        assert tc.get("/api/state").json()["admin"] is False
    assert client.sched("cpu0").policy == "fcfs"


def test_the_timeline_and_the_perfetto_download_show_device_work(kernel, web):
    with Client(kernel.address, name="worker") as c:
        x = c.put(torch.ones(64, 64))
        c.compute("matmul", x.handle, x.handle)
        state = state_until(web, lambda s: any(sl[1] == c.pid for sl in s["timeline"]["slices"]))
        (mine,) = [sl for sl in state["timeline"]["slices"] if sl[1] == c.pid and sl[4] == "matmul"][:1]
        assert mine[0] == "cpu0" and -60 <= mine[2] <= mine[3] <= 0 and mine[5:] == [0.0, 1.0]
        trace = web.get("/api/trace.json")
        assert "attachment" in trace.headers["content-disposition"]
        slices = [e for e in trace.json()["traceEvents"] if e.get("ph") == "X" and e["args"].get("pid") == c.pid]
        assert any(e["name"] == "matmul" and e["args"]["owner"].endswith("worker") for e in slices)  # "pid N worker"


def test_the_event_stream_pushes_the_state(web):
    with web.stream("GET", "/api/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith("event:"))
        data = next(line for line in lines if line.startswith("data:"))
    assert first == "event: state" and "devices" in json.loads(data[5:])


def test_no_token_only_on_loopback_addresses(kernel):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.com")
    with pytest.raises(ValueError, match="without a token"):
        WebServer(kernel.address, host="0.0.0.0", port=0, token=False)
    with pytest.raises(SystemExit, match="without a token"):
        main(["web", "--kernel", "shared", "--host", "0.0.0.0", "--no-token"])
