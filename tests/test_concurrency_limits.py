"""`max_concurrency`: a handler never runs more jobs at once than its limit,
jobs held back by it keep exact priority/FIFO order, and holding a backlog
back costs each job O(log n), not a pass over the whole backlog per
completion (counted with the `limits.holds_total` metric, not timed)."""
from __future__ import annotations

import random

from conftest import T, wait_until

LIMITED = T + "append"


def test_a_limited_backlog_is_parked_once_per_freed_slot(make_daemon, tmp_path):
    n = 3000
    d = make_daemon(workers=0, config=f'[handler."{T}noop"]\nmax_concurrency = 1\n')
    c = d.client(timeout=60)
    c.submit_many([{"handler": T + "noop"} for _ in range(n)])
    c.scale(2)
    wait_until(lambda: c.metrics()["queue"]["completed"] == n, 120, what="the backlog to drain")
    holds = c.metrics()["limits"]["holds_total"]
    # Each completion frees one slot and puts the handler's lane back once;
    # with two workers it is held about once per job. Holding every job of
    # the backlog again on every completion would take ~n*n/2 holds.
    assert holds <= 2 * n, holds


def test_limited_jobs_run_in_priority_then_submit_order(make_daemon, tmp_path):
    d = make_daemon(workers=0, config=f'[handler."{LIMITED}"]\nmax_concurrency = 1\n')
    c = d.client(timeout=30)
    out = tmp_path / "order"
    rng = random.Random(7)
    prios = [rng.choice([0, 10, 20, 30]) for _ in range(60)]
    c.submit_many([{"handler": LIMITED, "args": [str(out), i], "priority": p}
                   for i, p in enumerate(prios)]
                  + [{"handler": T + "noop"} for _ in range(30)])
    c.scale(3)
    wait_until(lambda: c.metrics()["queue"]["completed"] == 90, 60, what="every job")
    ran = [int(line.split()[0]) for line in out.read_text().splitlines()]
    assert ran == sorted(range(60), key=lambda i: (-prios[i], i))
    assert c.metrics()["limits"]["holds_total"] >= 1    # the limit did hold jobs
