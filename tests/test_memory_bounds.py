"""What client input may cost the daemon's memory.

Jobs keep their args and kwargs as the compact JSON text they arrived as, so
JSON made of tiny containers (`[{},{},...]`, ~26 times its size once decoded)
costs about its own size for as long as the job is kept, also after a
restart; all jobs together hold at most `[queue] max_args_bytes` of it, and a
submit past that is refused with `queue_full` naming the limit.
"""
from __future__ import annotations

import socket

import orjson
import pytest
from conftest import T, wait_until

from jobd_client import JobdError

MiB = 1024 * 1024
TINY = [{}] * (MiB // 3)            # ~1 MiB of JSON text, ~22 MiB once decoded


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def submit_raw(d, n: int) -> list[bytes]:
    """`n` submits of TINY, pipelined on one connection; the reply lines."""
    line = orjson.dumps({"op": "submit", "handler": T + "echo", "args": TINY}) + b"\n"
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.socket)
    f = s.makefile("rb")
    replies = []
    for _ in range(n):
        s.sendall(line)
        replies.append(f.readline())
    s.close()
    return replies


def test_args_made_of_tiny_containers_cost_about_their_size(make_daemon):
    d = make_daemon(workers=0)
    d.client().hello()
    base = rss(d.pid)
    replies = submit_raw(d, 40)                           # 40 MiB of JSON text
    assert all(b'"ok":true' in r for r in replies)
    grown = rss(d.pid) - base
    # decoded and kept, they would be ~900 MiB; one request is decoded at a time
    assert grown < 40 * MiB + 120 * MiB, grown // MiB
    view = d.client().list(limit=1).jobs[0]
    assert view.args == TINY                              # the view shows them unchanged
    d.close_clients()
    d.stop()
    d.start()                                             # replay keeps them compact too
    d.client().hello()
    assert rss(d.pid) < 40 * MiB + 160 * MiB, rss(d.pid) // MiB


def test_all_jobs_together_hold_at_most_max_args_bytes(make_daemon):
    d = make_daemon(workers=0, config=f"[queue]\nmax_args_bytes = {16 * MiB}\n")
    c = d.client()
    c.hello()
    base = rss(d.pid)
    replies = [orjson.loads(r) for r in submit_raw(d, 40)]
    ok = [r for r in replies if r["ok"]]
    refused = [r for r in replies if not r["ok"]]
    assert 10 <= len(ok) <= 16, len(ok)
    assert refused and all(r["error"]["code"] == "queue_full"
                           and "max_args_bytes" in r["error"]["message"] for r in refused)
    assert rss(d.pid) - base < 16 * MiB + 120 * MiB
    # small jobs still fit; purging frees room again
    with pytest.raises(JobdError) as e:
        c.submit(T + "echo", args=TINY)
    assert e.value.code == "queue_full"
    assert c.metrics()["queue"]["pending"] == len(ok)
    for r in ok:
        c.cancel(r["job_id"])
    assert c.purge(status="cancelled") == len(ok)
    wait_until(lambda: c.submit(T + "echo", args=TINY), 5, what="room after the purge")
