"""Durability through the real daemon (docs/durability.md, docs/wal.md): kill -9 and restart, a
damaged WAL tail, corruption in the middle, compaction, and the relaxed
fsync modes on a graceful stop.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import DaemonProc, T, wait_until

from jobd.core import records as R
from jobd.storage import codec
from jobd.storage import wal as W

NOOP = T + "echo"         # takes any args: the tests pass payloads


# --- helpers ----------------------------------------------------------------------------

def views(d: DaemonProc) -> dict[str, dict[str, Any]]:
    """Every job's full view, keyed by id, in list (submit) order."""
    c = d.client(timeout=30)
    page = c.call("list", limit=100_000)
    assert page["total"] == len(page["jobs"])
    return {j["id"]: j for j in page["jobs"]}


def wal_dir(d: DaemonProc) -> Path:
    return Path(d.data_dir) / "wal"


def segments(d: DaemonProc) -> list[Path]:
    return sorted(wal_dir(d).glob("*.log"))


def snapshots(d: DaemonProc) -> list[Path]:
    return sorted(wal_dir(d).glob("*.snap"))


def restart(d: DaemonProc, sig: int | None = None) -> None:
    """Stop (kill -9 when `sig` is None) and start again on the same data dir."""
    d.close_clients()
    if sig is None:
        d.kill9()
    else:
        assert d.stop(sig) == 0, d.log()
    d.start()


def populate(d: DaemonProc, rng: random.Random, batches: int = 12, batch: int = 200,
             singles: int = 300) -> None:
    """A few thousand acknowledged submits with a mix of every queue state."""
    c = d.client(timeout=30)
    ids: list[str] = []
    for b in range(batches):
        jobs = []
        for i in range(batch):
            job: dict[str, Any] = {"handler": NOOP, "args": [b, i, "x" * rng.randrange(40)],
                                   "priority": rng.choice([0, 10, 20, 30, 500]),
                                   "tags": {"batch": b}}
            if i and rng.random() < 0.05:
                job["job_id"] = f"b{b}-{i}"
                job["depends_on"] = [f"b{b}-{i - 1}"] if rng.random() < 0.5 else []
                jobs[-1]["job_id"] = f"b{b}-{i - 1}"
            if rng.random() < 0.05:
                job["delay"] = 3600
            jobs.append(job)
        ids += c.submit_many(jobs)
    for i in range(singles):
        kw: dict[str, Any] = {"priority": rng.randrange(0, 1001)}
        if rng.random() < 0.1:
            kw["delay"] = 3600 + i
        if rng.random() < 0.1:
            kw["depends_on"] = [rng.choice(ids)]
        ids.append(c.submit(NOOP, args=[i], kwargs={"k": i}, name=f"single-{i}", **kw))
    # cancel some, purge some of those, cancel more, retry a few
    rng.shuffle(ids)
    for jid in ids[:400]:
        c.cancel(jid)
    assert c.purge(status="cancelled") >= 300
    for jid in ids[400:700]:
        c.cancel(jid)
    for jid in ids[400:450]:
        if c.status(jid).status == "cancelled":
            c.retry(jid)
    c.close()


# --- kill -9 ------------------------------------------------------------------------------

def test_kill9_brings_back_exactly_the_acknowledged_state(make_daemon):
    d = make_daemon(workers=0)
    populate(d, random.Random(9))
    before = views(d)
    statuses = {s for v in before.values() for s in [v["status"]]}
    assert len(before) > 2000
    assert {"pending", "scheduled", "waiting", "cancelled"} <= statuses, statuses
    assert "failed" in statuses     # dependents of cancelled jobs
    metrics_before = d.client().metrics()["queue"]
    restart(d)
    after = views(d)
    assert list(after) == list(before), "job set or list order changed"
    diff = [(k, before[k], after[k]) for k in before if before[k] != after[k]]
    assert not diff, diff[:3]
    assert d.client().metrics()["queue"] == metrics_before
    assert re.search(r"recovered \d+ jobs", d.log())
    # the daemon carries on: new submits work and do not collide
    c = d.client()
    new = c.submit(NOOP)
    assert new not in before and c.list(limit=0).total == len(before) + 1
    # and a second crash is just as safe
    restart(d)
    again = views(d)
    assert list(again) == list(before) + [new]


def test_kill9_with_pipelined_submits_in_flight(make_daemon):
    """Every submit that was answered survives; unanswered ones may or may not."""
    d = make_daemon(workers=0)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(d.socket)
    n = 3000
    s.sendall(b"".join(orjson.dumps({"op": "submit", "id": i, "handler": NOOP,
                                     "job_id": f"p{i}"}) + b"\n" for i in range(n)))
    acked: list[str] = []
    buf = b""
    while len(acked) < 1000:
        buf += s.recv(65536)
        *lines, buf = buf.split(b"\n")
        for line in lines:
            reply = orjson.loads(line)
            assert reply["ok"], reply
            acked.append(reply["job_id"])
    d.kill9()
    s.close()
    d.start()
    after = views(d)
    missing = [j for j in acked if j not in after]
    assert not missing, f"{len(missing)} acknowledged submits lost, e.g. {missing[:5]}"
    assert all(v["status"] == "pending" for v in after.values())
    # whatever survived is a prefix of what was sent: the WAL is in order
    assert list(after) == [f"p{i}" for i in range(len(after))]


def test_kill9_while_running_requeues_with_the_attempt_counted(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client(timeout=20)
    jid = c.submit(T + "sleep", args=[60])
    wait_until(lambda: c.status(jid).status == "running", what="job to start")
    d.workers = 0             # restart without workers so the job stays visible
    restart(d)
    job = d.client().status(jid)
    assert job.status == "pending" and job.attempts == 1, job
    assert job.worker_id is None


def test_a_job_running_at_two_crashes_in_a_row_runs_again(make_daemon, tmp_path):
    """Two start records with a crash between them (recovery's requeue is not
    logged): the job must come back pending, not stay `running` with no worker."""
    d = make_daemon(workers=1)
    c = d.client(timeout=20)
    jid = c.submit(T + "sleep", args=[60])
    wait_until(lambda: c.status(jid).status == "running", what="job to start")
    restart(d)
    c = d.client(timeout=20)
    wait_until(lambda: c.status(jid).attempts == 2 and c.status(jid).status == "running",
               what="the job to start again after the first crash")
    d.workers = 0
    restart(d)
    job = d.client().status(jid)
    assert job.status == "pending" and job.attempts == 2, job
    assert job.worker_id is None


def test_a_record_about_a_job_the_log_never_admitted_is_skipped(make_daemon):
    """E.g. a start or cancel written after its submit's batch failed to write:
    recovery skips it with a warning instead of refusing to start."""
    d, ids = stopped_daemon_with_jobs(make_daemon, 3)
    buf = bytearray()
    codec.encode_into(buf, [R.CANCEL, "never-admitted", 1.0])
    with open(segments(d)[-1], "ab") as f:
        f.write(buf)
    d.start()
    c = d.client()
    assert [j.id for j in c.list().jobs] == ids
    assert "skipped 1 WAL record" in d.log()


def test_temp_files_left_by_a_crash_are_removed_at_startup(make_daemon):
    """A snapshot or result file written to `*.tmp` and never renamed (kill -9
    mid-compaction or mid-store) is referenced by nothing."""
    d, ids = stopped_daemon_with_jobs(make_daemon, 2)
    leftovers = [wal_dir(d) / "00000009.snap.tmp", Path(d.data_dir) / "results" / "ab.json.z.tmp"]
    for path in leftovers:
        path.write_bytes(b"\0" * 1000)
    d.start()
    assert [j.id for j in d.client().list().jobs] == ids
    assert not any(p.exists() for p in leftovers)


# --- WAL damage ---------------------------------------------------------------------------

def stopped_daemon_with_jobs(make_daemon, n: int) -> tuple[DaemonProc, list[str]]:
    d = make_daemon(workers=0)
    c = d.client()
    ids = [c.submit(NOOP, args=[i], job_id=f"job-{i:03d}") for i in range(n)]
    d.close_clients()
    assert d.stop() == 0, d.log()
    return d, ids


def test_random_bytes_appended_to_the_wal_are_dropped(make_daemon):
    d, ids = stopped_daemon_with_jobs(make_daemon, 50)
    seg = segments(d)[-1]
    good = seg.stat().st_size
    junk = random.Random(1).randbytes(777)
    with open(seg, "ab") as f:
        f.write(junk)
    d.start()
    assert "dropped 777 bytes" in d.log(), d.log()[-2000:]
    assert list(views(d)) == ids
    assert seg.stat().st_size == good, "the torn tail should be cut off"
    # the cut log is clean: a further restart drops nothing
    d.close_clients()
    assert d.stop() == 0
    log_len = len(d.log())
    d.start()
    assert "dropped" not in d.log()[log_len:]
    assert list(views(d)) == ids


@pytest.mark.parametrize("cut", [1, 3, 11])
def test_wal_truncated_mid_record_loses_only_the_last_record(make_daemon, cut):
    d, ids = stopped_daemon_with_jobs(make_daemon, 40)
    seg = segments(d)[-1]
    size = seg.stat().st_size
    os.truncate(seg, size - cut)
    d.start()
    m = re.search(r"dropped (\d+) bytes", d.log())
    assert m, d.log()[-2000:]
    dropped = int(m.group(1))
    assert 0 < dropped < 400 and dropped == size - cut - seg.stat().st_size
    assert list(views(d)) == ids[:-1]
    # the daemon accepts new work on the repaired log and keeps it
    c = d.client()
    c.submit(NOOP, job_id="after-repair")
    restart(d)
    assert list(views(d)) == ids[:-1] + ["after-repair"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("where", [0.1, 0.5, 0.8])
def test_corruption_in_the_middle_refuses_to_start(make_daemon, where):
    d, ids = stopped_daemon_with_jobs(make_daemon, 60)
    seg = segments(d)[-1]
    data = bytearray(seg.read_bytes())
    pos = int(len(data) * where)
    data[pos] ^= 0xFF
    data[pos + 1] ^= 0x5A
    seg.write_bytes(bytes(data))
    digest, mtime = _sha(seg), seg.stat().st_mtime_ns
    log_len = len(d.log())
    d.start(wait=False)
    assert d.proc is not None
    code = d.proc.wait(20)
    assert code != 0
    out = d.log()[log_len:]
    assert re.search(r"corrupt", out, re.I), out
    assert seg.name in out, out
    # one clear line at CRITICAL (a traceback only follows at debug level)
    assert any(re.search("corrupt", line, re.I) and "CRITICAL" in line
               for line in out.splitlines()), out
    assert _sha(seg) == digest and seg.stat().st_mtime_ns == mtime, "the WAL must not be touched"
    assert not os.path.exists(d.socket)


def test_damaged_snapshot_refuses_to_start(make_daemon):
    d = make_daemon(workers=0, config="[wal]\nsegment_bytes = 65536\n")
    c = d.client(timeout=30)
    for _ in range(5):
        c.submit_many([{"handler": NOOP, "args": ["y" * 100]} for _ in range(300)])
    wait_until(lambda: snapshots(d), what="a snapshot")
    d.close_clients()
    assert d.stop() == 0
    snap = snapshots(d)[-1]
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap.write_bytes(bytes(data))
    log_len = len(d.log())
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(20) != 0
    out = d.log()[log_len:]
    assert re.search(r"damaged|corrupt", out, re.I) and snap.name in out, out



def _compacted_twice(make_daemon) -> DaemonProc:
    """A stopped daemon whose WAL is a snapshot plus two or more segments."""
    d = make_daemon(workers=0, config="[wal]\nsegment_bytes = 65536\n")
    c = d.client(timeout=30)
    for _ in range(5):
        c.submit_many([{"handler": NOOP, "args": ["y" * 100]} for _ in range(300)])
    wait_until(lambda: snapshots(d), what="a snapshot")
    for _ in range(3):
        c.submit_many([{"handler": NOOP, "args": ["z" * 100]} for _ in range(300)])
    d.close_clients()
    assert d.stop() == 0
    return d


def _refuses_to_start(d: DaemonProc, *words: str) -> None:
    log_len = len(d.log())
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(20) != 0
    out = d.log()[log_len:]
    for word in words:
        assert word in out, out


@pytest.mark.parametrize("damage", ["deleted", "empty", "cut at a record boundary",
                                    "end record removed"])
def test_a_missing_or_incomplete_snapshot_refuses_to_start(make_daemon, damage):
    """Without these checks each of them started with jobs silently gone."""
    d = _compacted_twice(make_daemon)
    snap = snapshots(d)[-1]
    data = snap.read_bytes()
    if damage == "deleted":
        snap.unlink()
        _refuses_to_start(d, "hole", "missing")
        return
    if damage == "empty":
        data = b""
    elif damage == "cut at a record boundary":
        cut = codec.next_good_record(data, len(data) // 2)   # a whole-record prefix
        assert cut is not None
        data = data[:cut]
    else:
        end = bytearray()
        codec.encode_into(end, [W.SNAPSHOT_END, codec.scan(data).count - 1])
        assert data.endswith(end)
        data = data[:-len(end)]
    snap.write_bytes(data)
    _refuses_to_start(d, "incomplete", snap.name)


def test_a_snapshot_of_the_first_format_is_still_read(make_daemon):
    """Snapshots written before format 2 have no V/E records: read as before."""
    d = _compacted_twice(make_daemon)
    d.start()
    before = views(d)
    d.close_clients()
    assert d.stop() == 0
    snap = snapshots(d)[-1]
    old = bytearray()
    codec.scan(snap.read_bytes(), lambda rec: rec[0] in ("V", "E") or codec.encode_into(old, rec))
    assert 0 < len(old) < snap.stat().st_size
    snap.write_bytes(bytes(old))
    d.start()
    assert views(d) == before


def test_every_segment_starts_with_its_format_and_a_newer_format_is_refused(make_daemon):
    d, _ids = stopped_daemon_with_jobs(make_daemon, 2)
    firsts: list[Any] = []
    for seg in segments(d):
        codec.scan(seg.read_bytes(), lambda rec: firsts.append(rec) if len(firsts) == 0 else None)
        assert firsts and firsts[0] == [W.FORMAT, W.WAL_FORMAT], (seg.name, firsts)
        firsts.clear()
    buf = bytearray()
    codec.encode_into(buf, [W.FORMAT, W.WAL_FORMAT + 1])
    with open(segments(d)[-1], "ab") as f:
        f.write(buf)
    _refuses_to_start(d, "newer jobd")


@pytest.mark.parametrize("hole", ["the snapshot's own segment", "a gap after it"])
def test_a_missing_segment_refuses_to_start(make_daemon, hole):
    d = _compacted_twice(make_daemon)
    base = int(snapshots(d)[-1].name.split(".")[0])
    own = wal_dir(d) / f"{base:08d}.log"
    assert own.exists()
    if hole == "the snapshot's own segment":
        own.unlink()
        missing = own.name
    else:                                   # segment base+1 lost, base+2 present
        (wal_dir(d) / f"{base + 2:08d}.log").write_bytes(b"")
        missing = f"{base + 1:08d}.log"
    _refuses_to_start(d, "hole", missing)


# --- compaction ---------------------------------------------------------------------------

def test_compaction_writes_a_snapshot_and_removes_old_segments(make_daemon):
    d = make_daemon(workers=0, config="[wal]\nsegment_bytes = 65536\n")
    c = d.client(timeout=30)
    rng = random.Random(3)
    ids: list[str] = []
    for _ in range(12):
        ids += c.submit_many([{"handler": NOOP, "args": ["z" * rng.randrange(200)],
                               "priority": rng.randrange(100)} for _ in range(200)])
        # churn: cancel and purge so history is larger than live state
        for jid in ids[-200:-100]:
            c.cancel(jid)
        c.purge(status="cancelled")
    wait_until(lambda: snapshots(d) and not list(wal_dir(d).glob("*.tmp")),
               what="a snapshot")
    live = views(d)
    live_ids = [j for j in ids if j in live]
    assert len(live_ids) == 1200

    def compacted() -> bool:
        snaps, segs = snapshots(d), segments(d)
        if len(snaps) != 1:
            return False
        base = int(snaps[0].stem)
        return all(int(s.stem) >= base for s in segs) and not list(wal_dir(d).glob("*.tmp"))
    wait_until(compacted, what="old segments and snapshots to be removed")
    total = sum(p.stat().st_size for p in wal_dir(d).iterdir())
    snap_size = snapshots(d)[0].stat().st_size
    written = c.metrics()["wal"]["bytes_written"]
    # disk holds one snapshot of live state plus at most about one segment,
    # far less than the history (2400 submits, 1200 cancels, 12 purges)
    assert total <= snap_size + 2 * 65536, (total, snap_size)
    assert total < written * 0.6, (total, written)
    assert "WAL compacted" in d.log()
    before = views(d)
    restart(d)                         # kill -9 after compaction
    assert views(d) == before
    restart(d, signal.SIGTERM)         # and a graceful one
    after = views(d)
    assert after == before and list(after) == live_ids


# --- relaxed fsync modes -----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["never", "interval"])
def test_graceful_stop_loses_nothing_in_relaxed_fsync_modes(make_daemon, mode):
    d = make_daemon(workers=0, fsync=mode)
    c = d.client(timeout=30)
    ids = c.submit_many([{"handler": NOOP, "args": [i]} for i in range(500)])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(d.socket)
    s.sendall(b"".join(orjson.dumps({"op": "submit", "id": i, "handler": NOOP,
                                     "job_id": f"m{i}"}) + b"\n" for i in range(500)))
    got = b""
    while got.count(b"\n") < 500:
        got += s.recv(1 << 20)
    s.close()
    for jid in ids[:50]:
        c.cancel(jid)
    assert c.metrics()["wal"]["fsync_mode"] == mode
    before = views(d)
    assert len(before) == 1000
    restart(d, signal.SIGTERM)
    assert views(d) == before
