"""Failure groups through the real daemon: dead letters whose messages differ
only in numbers, ids, paths and addresses collapse into one group per failure;
a group shrinks as its jobs are retried or purged and disappears when empty;
`retry_many(signature=...)` retries exactly one group; the groups are rebuilt
equal after kill -9; the `failed` variant; `list` and `dead_letters` with
every filter field; and the op's answer at 200,000 dead letters."""
from __future__ import annotations

import json
import re
import time

import pytest
from conftest import T, wait_until

from jobd_client import JobdError

FAIL = T + "fail_with"
KINDS = {"conn": 6, "file": 4, "value": 2}       # jobs of each kind: three groups, by size


def call(c, op: str, **args):
    return c.call(op, **args)


def groups(c, **args) -> list[dict]:
    return call(c, "failure_groups", **args)["groups"]


def by_type(c, **args) -> dict[str, dict]:
    return {g["error_type"]: g for g in groups(c, **args)}


def dead(c) -> int:
    return c.metrics()["queue"]["dead_letter"]


def fail_jobs(c, kinds: dict[str, int] = KINDS, start: int = 0) -> dict[str, list[str]]:
    """Submit the failing jobs; wait until each has ended."""
    ids: dict[str, list[str]] = {}
    for kind, n in kinds.items():
        ids[kind] = [c.submit(FAIL, [kind, start + i * 37]) for i in range(n)]
    every = [i for batch in ids.values() for i in batch]
    wait_until(lambda: all(j.done for j in (c.status(i) for i in every)), 30,
               what="the failing jobs to end")
    return ids


def test_dead_letters_collapse_into_groups(client):
    c = client
    ids = fail_jobs(c)
    got = groups(c)
    assert [(g["error_type"], g["count"]) for g in got] == [
        ("ConnectionError", 6), ("FileNotFoundError", 4), ("ValueError", 2)]
    conn = got[0]
    assert conn["handler"] == FAIL
    assert conn["message"] == "connect to <addr> failed for order <n>"
    assert got[1]["message"] == "no such file: <path>"
    assert got[2]["message"] == "bad value <n> for job <id>"
    assert re.fullmatch(r"[0-9a-f]{16}", conn["signature"])
    assert len(conn["sample_ids"]) == 5 and set(conn["sample_ids"]) <= set(ids["conn"])
    assert conn["sample_ids"][0] == ids["conn"][-1] or conn["first_seen"] <= conn["last_seen"]
    assert conn["first_seen"] <= conn["last_seen"]
    assert call(c, "failure_groups")["total"] == 3
    # the job view names its group; a job that did not fail has none
    view = call(c, "status", job_id=ids["conn"][0])["job"]
    assert view["signature"] == conn["signature"]
    ok = c.submit(T + "add", [1, 2])
    c.wait(ok, timeout=30)
    assert call(c, "status", job_id=ok)["job"]["signature"] is None
    # filters and limit
    assert groups(c, handler=T + "other") == []
    assert groups(c, queue="default", limit=1) == got[:1]
    assert groups(c, status="failed") == []


def test_invalid_arguments_name_the_field(client):
    c = client
    for args, field in [({"status": "pending"}, "status"), ({"limit": 0}, "limit"),
                        ({"limit": "3"}, "limit"), ({"handlr": "x"}, "handlr"),
                        ({"queue": "no such/queue"}, "queue")]:
        with pytest.raises(JobdError) as e:
            call(c, "failure_groups", **args)
        assert e.value.code == "invalid_argument"
        assert e.value.message.startswith(field + ":"), e.value.message
    with pytest.raises(JobdError) as e:
        call(c, "list", signature="not-a-signature")
    assert e.value.message.startswith("signature:")


def test_count_drops_as_jobs_are_retried_or_purged(client):
    c = client
    ids = fail_jobs(c)
    c.pause(handler=FAIL)           # a retried job stays pending: it leaves its group
    assert c.retry(ids["conn"][0]) == "pending"
    assert by_type(c)["ConnectionError"]["count"] == 5
    assert ids["conn"][0] not in by_type(c)["ConnectionError"]["sample_ids"]
    assert c.purge(ids=ids["file"][:3]) == 3
    assert by_type(c)["FileNotFoundError"]["count"] == 1
    assert c.purge(ids=ids["file"][3:]) == 1
    assert "FileNotFoundError" not in by_type(c)          # an empty group disappears
    c.resume(handler=FAIL)          # it fails again: back in its group
    wait_until(lambda: by_type(c)["ConnectionError"]["count"] == 6, what="the job to fail again")


def test_retry_many_by_signature_retries_exactly_that_group(client):
    c = client
    ids = fail_jobs(c)
    sig = by_type(c)["ConnectionError"]["signature"]
    dry = c.call("retry_many", signature=sig, dry_run=True)
    assert (dry["matched"], dry["retried"]) == (6, 0)
    assert set(dry["sample"]) <= set(ids["conn"])
    assert call(c, "list", signature=sig)["total"] == 6
    c.pause(handler=FAIL)
    done = c.call("retry_many", signature=sig)
    assert (done["matched"], done["retried"]) == (6, 6)
    assert set(by_type(c)) == {"FileNotFoundError", "ValueError"}      # the others untouched
    assert {c.status(i).status for i in ids["conn"]} == {"pending"}
    assert {c.status(i).status for i in ids["file"] + ids["value"]} == {"dead_letter"}
    assert call(c, "list", signature=sig)["total"] == 0
    # cancel_many and purge take the signature too
    file_sig = by_type(c)["FileNotFoundError"]["signature"]
    assert c.call("cancel_many", signature=file_sig)["matched"] == 0     # all finished
    assert c.call("purge", signature=file_sig)["purged"] == 4
    assert dead(c) == 2


def test_groups_survive_kill_9(make_daemon):
    d = make_daemon()
    c = d.client()
    fail_jobs(c)
    c.pause(handler=FAIL)
    first = by_type(c)["ConnectionError"]
    c.retry(first["sample_ids"][0])
    before = {s: groups(c, status=s) for s in ("dead_letter", "failed")}
    d.close_clients()
    d.kill9()
    d.start()
    c = d.client()
    assert {s: groups(c, status=s) for s in ("dead_letter", "failed")} == before
    assert by_type(c)["ConnectionError"]["count"] == 5


def test_failed_status_and_own_error_types(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    c.pause(handler=FAIL)           # the children wait on the parent, then fail with it
    perm = [c.submit(FAIL, ["permanent", i * 13]) for i in range(3)]
    parent = c.submit(FAIL, ["value", 1])
    children = [c.submit(T + "add", [1, 2], depends_on=[parent]) for _ in range(2)]
    c.resume(handler=FAIL)
    slow = c.submit(T + "sleep", [30], timeout=0.3, max_retries=0)
    every = perm + children + [parent, slow]
    wait_until(lambda: all(c.status(i).done for i in every), 30, what="the jobs to end")
    failed = by_type(c, status="failed")
    assert failed["PermanentError"]["count"] == 3
    assert failed["PermanentError"]["message"] == "account <n> is closed (<addr>)"
    assert failed["DependencyFailed"]["count"] == 2
    assert failed["DependencyFailed"]["message"] == "dependency <id> ended dead_letter"
    assert failed["DependencyFailed"]["handler"] == T + "add"
    assert by_type(c)["Timeout"]["count"] == 1
    assert by_type(c)["Timeout"]["sample_ids"] == [slow]
    page = call(c, "list", status="failed", signature=failed["PermanentError"]["signature"])
    assert sorted(j["id"] for j in page["jobs"]) == sorted(perm)


def test_list_takes_every_filter_field(client):
    c = client
    c.pause(handler=T + "noop")
    a = c.submit(T + "noop", tags={"tenant": "a"})
    mid = c.status(a).created_at
    wait_until(lambda: c.status(c.submit(T + "noop")).created_at > mid, what="the clock to move")
    b = c.submit(T + "noop", tags={"tenant": "b"})
    ids = fail_jobs(c, {"conn": 2, "value": 1})
    sig = by_type(c)["ConnectionError"]["signature"]

    def listed(**args) -> list[str]:
        page = call(c, "list", limit=1000, **args)
        assert page["total"] == len(page["jobs"])
        return [j["id"] for j in page["jobs"]]

    assert listed(status=["pending", "dead_letter"]) == listed(status="pending") + \
        listed(status="dead_letter")
    assert listed(queue="default", handler=T + "noop", tag="tenant=b") == [b]
    assert a in listed(created_before=c.status(b).created_at) and b not in \
        listed(created_before=c.status(b).created_at)
    assert b in listed(created_after=mid) and a not in listed(created_after=mid)
    assert listed(error_match="connect to") == ids["conn"]
    assert listed(ids=[b, ids["value"][0], "missing"]) == [b, ids["value"][0]]
    assert listed(signature=sig) == ids["conn"]
    assert listed(signature=sig, ids=[ids["conn"][1], b]) == [ids["conn"][1]]
    # paging, and `dead_letters` with the same fields
    page = call(c, "list", status="dead_letter", limit=1, offset=1)
    assert ([j["id"] for j in page["jobs"]], page["total"]) == ([ids["conn"][1]], 3)
    assert page["jobs"][0]["signature"] == sig
    dl = call(c, "dead_letters", signature=sig, limit=1)
    assert ([j["id"] for j in dl["jobs"]], dl["total"]) == ([ids["conn"][0]], 2)
    assert call(c, "dead_letters", handler=T + "noop")["total"] == 0
    assert call(c, "dead_letters", status="pending")["total"] == 0
    assert call(c, "dead_letters")["total"] == 3


def test_failure_groups_at_200k_dead_letters(make_daemon):
    """200,000 dead letters (replayed from a synthetic WAL: made live, each
    costs a failing attempt), 20 groups: the op answers in about a
    millisecond, and a group can be retried by its signature."""
    from bench.failures import GROUPS, write_dead_letters

    n = 200_000
    d = make_daemon(start=False, workers=0,
                    config=f"[queue]\nmax_size = {2 * n}\n[dead_letter]\nmax_size = {2 * n}\n")
    write_dead_letters(d.data_dir, n, T + "noop")
    t0 = time.perf_counter()
    d.start()
    started = time.perf_counter() - t0
    c = d.client(timeout=120)
    # Replay left the dead letters ungrouped: the first answer waits until the
    # daemon, serving meanwhile, has grouped them all.
    t0 = time.perf_counter()
    first = groups(c)
    print(f"\nfirst failure_groups answered {time.perf_counter() - t0:.2f} s after the "
          "daemon answered hello")
    assert sum(g["count"] for g in first) == n
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        got = groups(c)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"{n:,} dead letters in {GROUPS} groups: daemon up in {started:.2f} s, "
          f"failure_groups median {times[10] * 1e3:.3f} ms, best {times[0] * 1e3:.3f} ms")
    assert len(got) == GROUPS and sum(g["count"] for g in got) == n
    sig = got[0]["signature"]
    t0 = time.perf_counter()
    dry = c.call("retry_many", signature=sig, dry_run=True)
    print(f"retry_many dry run of one group ({dry['matched']:,} jobs): "
          f"{(time.perf_counter() - t0) * 1e3:.1f} ms")
    assert dry["matched"] == n // GROUPS


# --- the client and the CLI --------------------------------------------------------------------
def test_client_methods(client):
    c = client
    ids = fail_jobs(c)
    got = c.failure_groups()
    assert [g["count"] for g in got] == [6, 4, 2]
    assert c.failure_groups(handler=FAIL, limit=1) == got[:1]
    assert c.failure_groups(status="failed") == []
    sig = got[0]["signature"]
    page = c.list(signature=sig, limit=2)
    assert (page.total, [j.id for j in page.jobs]) == (6, ids["conn"][:2])
    assert page.jobs[0].signature == sig
    assert c.list(status=["dead_letter"], error_match="no such file").total == 4
    assert c.dead_letters(signature=sig).total == 6
    assert c.dead_letters(handler=T + "noop").total == 0
    assert c.retry_many(signature=sig, dry_run=True)["matched"] == 6
    assert c.purge(signature=got[2]["signature"]) == 2
    with pytest.raises(TypeError):
        c.list(signatur=sig)        # type: ignore[call-arg]
    with pytest.raises(JobdError) as e:
        c.failure_groups(status="pending")
    assert e.value.code == "invalid_argument"


async def test_async_client_methods(daemon):
    from jobd_client import AsyncClient

    sync = daemon.client()
    fail_jobs(sync, {"conn": 2, "value": 1})
    async with AsyncClient(socket_path=daemon.socket) as c:
        got = await c.failure_groups()
        assert [g["count"] for g in got] == [2, 1]
        sig = got[0]["signature"]
        assert (await c.list(signature=sig)).total == 2
        assert (await c.dead_letters(signature=sig, limit=1)).total == 2
        assert (await c.retry_many(signature=sig, dry_run=True))["matched"] == 2
        assert await c.failure_groups(handler=FAIL, queue="default", limit=1) == got[:1]


def test_cli_failures_table_and_filters(daemon, capsys):
    from jobd.cli import main

    c = daemon.client()
    ids = fail_jobs(c)

    def cli(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--socket", daemon.socket, *argv])
        return code, capsys.readouterr().out

    code, out = cli("failures")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["COUNT", "HANDLER", "TYPE", "MESSAGE", "LAST", "SEEN", "SIGNATURE"]
    assert lines[1].split()[0] == "6" and "ConnectionError" in lines[1]
    assert "3 failure group(s)" in lines[-1]
    sig = c.failure_groups()[0]["signature"]
    assert lines[1].split()[-1] == sig                         # in full: it is copied
    code, out = cli("failures", "--json", "--limit", "1", "--handler", FAIL)
    body = json.loads(out)
    assert (code, body["total"], len(body["groups"])) == (0, 3, 1)
    assert cli("failures", "--status", "failed")[1].strip() == "no failed jobs"
    # --signature on list and on retry --all (a dry run, then for real)
    code, out = cli("list", "--signature", sig, "--json")
    assert [j["id"] for j in json.loads(out)["jobs"]] == ids["conn"]
    code, out = cli("dead", "--signature", sig)
    assert code == 0 and out.splitlines()[-1] == "6 job(s)"
    code, out = cli("retry", "--all", "--signature", sig)
    assert code == 0 and out.startswith("6 job(s) match")
    c.pause(handler=FAIL)
    code, out = cli("retry", "--all", "--signature", sig, "--yes")
    assert out.strip() == "retried 6 of 6 matching job(s)"
    assert [g["error_type"] for g in c.failure_groups()] == ["FileNotFoundError", "ValueError"]
    file_sig = c.failure_groups()[0]["signature"]
    code, out = cli("cancel", "--all", "--signature", file_sig, "--yes", "--json")
    assert json.loads(out)["matched"] == 0                      # dead letters are finished
    code, _ = cli("failures", "--status", "pending")
    assert code == 2                                            # a usage error


def test_failure_table_fits_the_width():
    from jobd.cli.failures import failure_table

    group = {"count": 12, "handler": "myapp.tasks.reports.build", "error_type": "ValueError",
             "message": "bad value <n> for order <n> " * 5, "last_seen": None,
             "signature": "0123456789abcdef"}
    lines = failure_table([group], 80)
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].endswith("0123456789abcdef") and "~" in lines[1]
