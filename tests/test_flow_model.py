"""A model of which jobs may start, against the real daemon (hypothesis).

Random submits, pauses and resumes of handlers and queues, rate changes
(a SIGHUP with a new config), cancels and completions. Jobs run until the
test releases them, so every start stays visible. After each step the test
waits until the daemon settles and checks, against the model:

- it never started a held job (its handler or queue paused, or its rate
  limit spent);
- it never leaves an eligible job pending while a worker of its queue is
  idle (the wait for that state would time out). A SIGHUP reloads the
  handler code too: a new pool runs new jobs while the old workers finish
  theirs, so a queue's capacity counts only jobs started since the reload.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from conftest import DaemonProc, wait_until
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

HANDLERS = ("gated_a", "gated_b", "gated_c")
QUEUE_OF = {"gated_a": "default", "gated_b": "default", "gated_c": "side"}
WORKERS = {"default": 2, "side": 1}


def config(rated: set[str]) -> str:
    text = "[queues.side]\nworkers = 1\n"
    for h in HANDLERS:
        text += f'\n[handler."{h}"]\nqueue = "{QUEUE_OF[h]}"\n'
        if h in rated:
            text += 'rate = "1/h"\n'
    return text


class FlowModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="jobd-flow-"))
        self.d = DaemonProc(self.root, workers=2, config=config(set()))
        self.d.start()
        self.c = self.d.client()
        self.handler_paused: set[str] = set()
        self.queue_paused: set[str] = set()
        self.allowance: dict[str, int | None] = dict.fromkeys(HANDLERS)   # None: no limit
        self.jobs: dict[str, str] = {}          # id → handler
        self.status: dict[str, str] = {}        # id → pending / running / done
        self.n = 0
        # A SIGHUP also reloads the handler code: a fresh pool takes new jobs
        # while the old workers finish theirs. Jobs count against the pool
        # of the generation (`era`) they were seen starting in.
        self.era = 0
        self.started_in: dict[str, int] = {}

    def teardown(self) -> None:
        for job_id in self.jobs:
            (self.root / job_id).touch()
        self.d.cleanup()

    # --- the model ----------------------------------------------------------------------
    def eligible(self, handler: str) -> bool:
        return (handler not in self.handler_paused
                and QUEUE_OF[handler] not in self.queue_paused
                and self.allowance[handler] != 0)

    def settle(self) -> None:
        """Wait until the daemon's running set is what the model allows, and
        check each job it started since the last look."""
        def settled() -> bool:
            running = {j["id"] for j in self.c.call("list", status="running", limit=1000)["jobs"]}
            new = running - {j for j, s in self.status.items() if s == "running"}
            for job_id in new:
                handler = self.jobs[job_id]
                assert self.status[job_id] == "pending", job_id
                assert self.eligible(handler), f"{job_id} ({handler}) started while held"
                self.status[job_id] = "running"
                self.started_in[job_id] = self.era
                if self.allowance[handler] is not None:
                    self.allowance[handler] -= 1       # type: ignore[operator]
            for queue, workers in WORKERS.items():
                busy = sum(1 for j, s in self.status.items()
                           if s == "running" and QUEUE_OF[self.jobs[j]] == queue
                           and self.started_in[j] == self.era)
                waiting = [j for j, s in self.status.items() if s == "pending"
                           and QUEUE_OF[self.jobs[j]] == queue and self.eligible(self.jobs[j])]
                if waiting and busy < workers:
                    return False
            return True
        try:
            wait_until(settled, 15, interval=0.01, what="the daemon to start what may start")
        except AssertionError as e:
            workers = [(w["id"], w["queue"], w["status"], w["current_job"])
                       for w in self.c.workers()]
            pending = [(j["id"], j["handler"], j["held"])
                       for j in self.c.call("list", status="pending")["jobs"]]
            raise AssertionError(f"{e}\nmodel: {self.status} era {self.era} "
                                 f"{self.started_in}\nworkers: {workers}\n"
                                 f"pending: {pending}") from None

    # --- steps ---------------------------------------------------------------------------
    @rule(handler=st.sampled_from(HANDLERS), priority=st.sampled_from([0, 10, 20]))
    def submit(self, handler: str, priority: int) -> None:
        self.n += 1
        job_id = f"job{self.n}"
        self.c.call("submit", handler=handler, args=[str(self.root / job_id)],
                    priority=priority, job_id=job_id)
        self.jobs[job_id] = handler
        self.status[job_id] = "pending"
        self.settle()

    @rule(handler=st.sampled_from(HANDLERS))
    def pause_handler(self, handler: str) -> None:
        self.c.call("pause", handler=handler)
        self.handler_paused.add(handler)
        self.settle()

    @rule(handler=st.sampled_from(HANDLERS))
    def resume_handler(self, handler: str) -> None:
        self.c.call("resume", handler=handler)
        self.handler_paused.discard(handler)
        self.settle()

    @rule(queue=st.sampled_from(sorted(WORKERS)))
    def pause_queue(self, queue: str) -> None:
        self.c.call("pause", queue=queue)
        self.queue_paused.add(queue)
        self.settle()

    @rule(queue=st.sampled_from(sorted(WORKERS)))
    def resume_queue(self, queue: str) -> None:
        self.c.call("resume", queue=queue)
        self.queue_paused.discard(queue)
        self.settle()

    @rule(handler=st.sampled_from(HANDLERS))
    def toggle_rate(self, handler: str) -> None:
        """A SIGHUP sets (or drops) a "1/h" limit: one start, then held."""
        rated = {h for h, a in self.allowance.items() if a is not None} ^ {handler}
        Path(self.d.config_path or "").write_text(config(rated))
        os.kill(self.d.pid, 1)
        want = "1/h" if handler in rated else None

        def applied() -> bool:
            rows = {r["name"]: r for r in self.c.call("handlers")["handlers"]}
            return rows[handler]["rate"] == want
        wait_until(applied, 15, what="the reload")
        self.era += 1
        self.allowance[handler] = 1 if want else None
        self.settle()

    # Which jobs are pending or running depends on the daemon (which job of
    # a tie it started), so the pick is an index, never a strategy built from
    # that state: the same draws always mean the same steps to hypothesis.
    def pick(self, which: str, index: int) -> str | None:
        ids = sorted((j for j, s in self.status.items() if s == which), key=lambda j: int(j[3:]))
        return ids[index % len(ids)] if ids else None

    @rule(index=st.integers(0, 1000))
    def cancel(self, index: int) -> None:
        job_id = self.pick("pending", index)
        if job_id is None:
            return
        assert self.c.call("cancel", job_id=job_id)["cancelled"] is True
        self.status[job_id] = "done"
        self.settle()

    @rule(index=st.integers(0, 1000))
    def complete(self, index: int) -> None:
        job_id = self.pick("running", index)
        if job_id is None:
            return
        (self.root / job_id).touch()
        assert self.c.wait(job_id, timeout=30).status == "completed"
        self.status[job_id] = "done"
        self.settle()


TestFlowModel = FlowModel.TestCase
TestFlowModel.settings = settings(max_examples=40, stateful_step_count=40, deadline=None,
                                  suppress_health_check=list(HealthCheck),
                                  # each example runs a daemon: no shrinking (it would take
                                  # minutes); a failure prints its steps as they ran
                                  phases=[Phase.explicit, Phase.reuse, Phase.generate])
