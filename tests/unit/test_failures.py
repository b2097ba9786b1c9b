"""jobd/core/failures.py: the normaliser, what went wrong (`classify`), the
signature, and the groups kept by `Lifecycle` on every transition into and
out of failed/dead_letter, against a brute-force recount."""
from __future__ import annotations

import random
import time
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jobd import constants as C
from jobd.core import records as R
from jobd.core.failures import (
    FAILURE_STATUSES,
    FailureGroups,
    classify,
    describe,
    normalise,
    signature,
    signature_of,
)
from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, Job, iso
from jobd.core.lifecycle import Lifecycle

T0 = 1_800_000_000.0
DEFAULTS = (0, 1.0, 2.0, None, None, None)


# --- the normaliser -------------------------------------------------------------------------
def test_placeholders() -> None:
    cases = {
        "connect to 10.0.0.7:5432 failed for order 8812": "connect to <addr> failed for order <n>",
        "bad value 42 in /var/data/file_12.csv at 0x7f3a2b1c":
            "bad value <n> in <path> at <addr>",
        "job 3f2a9c1e0b7d4e5f8a6b1c2d3e4f5a6b failed for alice@example.com":
            "job <id> failed for <addr>",
        "uuid 123e4567-e89b-12d3-a456-426614174000 not found": "uuid <id> not found",
        "db.example.com:5432 [::1]:8080 fe80::1%eth0, 2001:db8::ff00:42:8329":
            "<addr> <addr> <addr>, <addr>",
        "see https://api.example.com/v1/users/123?x=1.": "see <url>.",
        "run sched:nightly:20261206T023000Z of order_8f3a2c1 done.": "run <id> of <id> done.",
        "KeyError: 'user_8812abc'": "KeyError: '<id>'",
        r"C:\Users\bob\file.txt and ./rel/path and ~/x": "<path> and <path> and <path>",
        "<Foo object at 0x7f3a>": "<Foo object at <addr>>",
        "took 1.5s (attempt 3)": "took <n>s (attempt <n>)",
        "nothing varies here": "nothing varies here",
    }
    for raw, want in cases.items():
        assert normalise(raw) == want, raw


def test_messages_differing_only_in_what_varies_are_one() -> None:
    a = normalise("order 17 of user 9f1c2d3e4b5a6978 at 10.1.2.3:80 wrote /tmp/x/17.json")
    b = normalise("order 90211 of user 00aa11bb22cc33dd at 192.168.0.1:8443 wrote /srv/y.json")
    assert a == b


def test_long_messages_are_cut() -> None:
    assert len(normalise("x " * 10_000)) <= 256


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab0x9Ff-_.:/@ \\[]<>'()%~,;")) | st.characters(),
               max_size=120))
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["order", "42", "10.0.0.1:80", "/a/b1", "user@x.io", "0xff",
                                 "c0ffee01", "x", ":", "[::1]", "ab12cd34ef", "9.5s"]),
                max_size=12))
def test_normalise_is_idempotent_on_words(words: list[str]) -> None:
    once = normalise(" ".join(words))
    assert normalise(once) == once


# --- what went wrong ---------------------------------------------------------------------------
def test_error_types() -> None:
    # the texts jobd writes itself (jobd/jobs.py, jobd/pool/arbiter.py, jobd/core/lifecycle.py)
    cases = [
        ("timeout", C.FAILURE_TIMEOUT, "timeout"),
        ("worker 3 (pid 4242) died while running the job: killed by signal SIGKILL "
         "(perhaps out of memory?)", C.FAILURE_WORKER_DIED,
         "worker <n> (pid <n>) died while running the job: killed by signal SIGKILL "
         "(perhaps out of memory?)"),
        ("worker 1 (pid 22) stopped sending heartbeats for 30s and was killed",
         C.FAILURE_WORKER_HUNG, "worker <n> (pid <n>) stopped sending heartbeats for <n>s and "
                                "was killed"),
        ("poison: the job killed its worker 2 times; last: worker 1 (pid 9) died while running "
         "the job: exit status 3", C.FAILURE_POISON,
         "poison: the job killed its worker <n> times; last: worker <n> (pid <n>) died while "
         "running the job: exit status <n>"),
        ("dependency step-one ended dead_letter", C.FAILURE_DEPENDENCY,
         "dependency <id> ended dead_letter"),
        ("dependency a1 ended unsuccessfully", C.FAILURE_DEPENDENCY,
         "dependency <id> ended unsuccessfully"),
        ("handler returned a value that is not JSON-serialisable (set): x",
         C.FAILURE_NOT_SERIALISABLE, "handler returned a value that is not JSON-serialisable "
                                     "(set): x"),
        ("retry requested after 5s", C.FAILURE_RETRY, "retry requested after <n>s"),
        ("ValueError: bad 7\nTraceback (most recent call last):\n  ...\nValueError: bad 7\n",
         "ValueError", "bad <n>"),
        ("PermanentError: no such account 1234", "PermanentError", "no such account <n>"),
        ("KeyboardInterrupt: ", "KeyboardInterrupt", ""),
        ("something odd happened", C.FAILURE_UNKNOWN, "something odd happened"),
        ("", C.FAILURE_UNKNOWN, ""),
    ]
    for error, kind, message in cases:
        sig, got_kind, got_message = describe("h", error)
        assert (got_kind, got_message) == (kind, message), error
        assert sig == signature("h", kind, message)


def test_classify_keeps_the_message_after_the_type() -> None:
    assert classify("ConnectionError: refused") == ("ConnectionError", "refused")


def test_signature_is_stable() -> None:
    # Pinned: a signature must not change between releases (operators keep them).
    assert signature("send_email", "ValueError", "bad value <n>") == "67647aac24360350"
    assert len(signature("h", "", "")) == 16


def test_signature_separates_handlers_and_types() -> None:
    sigs = {signature("a", "T", "m"), signature("b", "T", "m"), signature("a", "U", "m"),
            signature("a", "T", "n")}
    assert len(sigs) == 4


# --- the groups, kept by Lifecycle ---------------------------------------------------------------
ERRORS = ["ValueError: bad value {n}", "ValueError: bad value {n} at /tmp/{n}",
          "timeout", "KeyError: 'order_{n}abcdef'", "worker 1 (pid {n}) died while running "
          "the job: exit status 1"]


class Logged(Lifecycle):
    """A Lifecycle that keeps every record it applies (what a WAL would hold)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[list[Any]] = []

    def apply(self, rec: list[Any]) -> None:
        self.log.append(rec)
        super().apply(rec)


def _submit(life: Lifecycle, job_id: str, handler: str, queue: str, now: float) -> None:
    job = Job.new(job_id, handler, 10, life.table.next_seq(), now, DEFAULTS, None, EMPTY_ARGS,
                  EMPTY_KWARGS, EMPTY_DICT, EMPTY_LIST, queue)
    life.place(job, None, now)
    life.apply([R.SUBMIT, job.to_record()])


def _fail(life: Lifecycle, job_id: str, error: str, status: str, now: float) -> None:
    life.apply(R.start(job_id, now, 1))
    life.apply(R.fail(job_id, now, error, status, None, False))


def brute_force(life: Lifecycle, status: str) -> dict[str, dict[str, Any]]:
    """Every group recounted from the jobs, by signature."""
    out: dict[str, dict[str, Any]] = {}
    members: dict[str, list[Job]] = defaultdict(list)
    for job in life.table.jobs.values():
        if job.status == status:
            members[describe(job.handler, job.error)[0]].append(job)
    for sig, jobs in members.items():
        stamps = [j.completed_at or 0.0 for j in jobs]
        newest = sorted(((j.completed_at or 0.0, j.id) for j in jobs), reverse=True)[:5]
        out[sig] = {"count": len(jobs), "first_seen": iso(min(stamps)),
                    "last_seen": iso(max(stamps)), "sample_ids": [i for _, i in newest]}
    return out


def indexed(groups: FailureGroups, status: str) -> dict[str, dict[str, Any]]:
    views, total = groups.summary(status)
    assert total == len(views)
    return {v["signature"]: {k: v[k] for k in ("count", "first_seen", "last_seen", "sample_ids")}
            for v in views}


def random_history(seed: int, steps: int, life: Lifecycle | None = None,
                   start: int = 0, now: float = T0) -> Logged:
    """Jobs failing (to failed or dead_letter), retried, failing again, deleted,
    and completing, in a random order; failure times go forward (never two at
    one time: which of equally new jobs a sample shows is not defined)."""
    rng = random.Random(seed)
    life = life if life is not None else Logged()
    live: list[str] = [j.id for j in life.table.jobs.values()]
    for i in range(start, start + steps):
        now += rng.choice((0.25, 0.5, 1.0))
        action = rng.random()
        if action < 0.45 or not live:
            job_id = f"j{i}"
            _submit(life, job_id, rng.choice(("h", "g")), rng.choice(("default", "q2")), now)
            live.append(job_id)
            if rng.random() < 0.1:
                life.apply(R.start(job_id, now, 1))
                life.apply(R.complete(job_id, now, None, None))
            else:
                error = rng.choice(ERRORS).format(n=rng.randrange(1000))
                _fail(life, job_id, error, rng.choice((C.DEAD_LETTER, C.FAILED)), now)
            continue
        job = life.table.jobs[rng.choice(live)]
        if action < 0.7 and job.status in FAILURE_STATUSES:
            life.apply([R.RETRY, job.id, now])
            if rng.random() < 0.7:
                _fail(life, job.id, rng.choice(ERRORS).format(n=i), C.DEAD_LETTER, now)
        elif action < 0.9:
            life.apply([R.DELETE, [job.id]])
            live.remove(job.id)
    assert isinstance(life, Logged)
    return life


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 300))
def test_groups_equal_a_recount(seed: int, steps: int) -> None:
    life = random_history(seed, steps)
    for status in (C.DEAD_LETTER, C.FAILED):
        assert indexed(life.table.failures, status) == brute_force(life, status)
    assert len(life.table.failures) == life.table.counts[C.DEAD_LETTER] + \
        life.table.counts[C.FAILED]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 300), st.integers(0, 300), st.integers(1, 50))
def test_groups_classified_after_replay_equal_a_recount(seed: int, steps: int, more: int,
                                                        chunk: int) -> None:
    """Replay defers grouping (the backlog); changes made while it is worked
    off in chunks, and the chunks' size, change nothing in the end."""
    life = random_history(seed, steps)
    again = Logged()
    again.table.failures.defer()
    for rec in life.log:
        again.replay(rec)
    again.table.failures.replayed()
    failures = again.table.failures
    rng = random.Random(seed)
    turn = 0
    while failures.pending:
        failures.catch_up(chunk)
        turn += 1
        if rng.random() < 0.3:          # the daemon serves meanwhile
            random_history(seed + turn, rng.randrange(5), again, start=10**6 + 10 * turn,
                           now=T0 + 10**6 + 10**3 * turn)
        for job in list(again.table.jobs.values())[:3]:
            if failures.pending and job.status in FAILURE_STATUSES:
                assert failures.holds(job, signature_of(job) or "")
                assert failures.members_of(signature_of(job) or "") is None
    random_history(seed, more, again, start=steps, now=T0 + 2 * 10**6)
    for status in (C.DEAD_LETTER, C.FAILED):
        assert indexed(failures, status) == brute_force(again, status)
    assert failures.backlog == []


def test_groups_survive_a_snapshot_replay() -> None:
    """A snapshot lists jobs in submit order, not in the order they failed:
    the groups rebuilt from it equal those before."""
    life = random_history(7, 2_000)
    for deferred in (False, True):
        again = Lifecycle()
        if deferred:
            again.table.failures.defer()
        for rec in life.snapshot():
            again.replay(rec)
        again.table.failures.replayed()
        for status in (C.DEAD_LETTER, C.FAILED):
            assert indexed(again.table.failures, status) == indexed(life.table.failures, status)


def test_empty_groups_disappear() -> None:
    life = Lifecycle()
    _submit(life, "a", "h", "default", T0)
    _fail(life, "a", "ValueError: x 1", C.DEAD_LETTER, T0)
    assert len(life.table.failures.groups) == 1
    life.apply([R.RETRY, "a", T0 + 1])
    assert life.table.failures.groups == {}
    _fail(life, "a", "ValueError: x 2", C.DEAD_LETTER, T0 + 2)
    life.apply([R.DELETE, ["a"]])
    assert life.table.failures.groups == {}


def test_dependency_failures_are_grouped() -> None:
    life = Lifecycle()
    _submit(life, "parent", "h", "default", T0)
    for i in range(3):
        job = Job.new(f"child{i}", "h", 10, life.table.next_seq(), T0, DEFAULTS, None,
                      EMPTY_ARGS, EMPTY_KWARGS, EMPTY_DICT, ["parent"])
        life.place(job, None, T0)
        life.apply([R.SUBMIT, job.to_record()])
    _fail(life, "parent", "ValueError: boom", C.DEAD_LETTER, T0)
    (group,) = life.table.failures.summary(C.FAILED)[0]
    assert (group["error_type"], group["count"]) == (C.FAILURE_DEPENDENCY, 3)
    assert signature_of(life.table.jobs["child0"]) == group["signature"]
    assert signature_of(life.table.jobs["parent"]) != group["signature"]


def test_a_signature_in_two_queues_is_one_group() -> None:
    life = Lifecycle()
    for i, queue in enumerate(("default", "q2", "q2")):
        _submit(life, f"j{i}", "h", queue, T0 + i)
        _fail(life, f"j{i}", f"ValueError: bad {i}", C.DEAD_LETTER, T0 + i)
    (both,), _ = life.table.failures.summary(C.DEAD_LETTER)
    assert both["count"] == 3 and both["sample_ids"] == ["j2", "j1", "j0"]
    (q2,), _ = life.table.failures.summary(C.DEAD_LETTER, queue="q2")
    assert q2["count"] == 2 and q2["first_seen"] == iso(T0 + 1)
    assert life.table.failures.summary(C.DEAD_LETTER, handler="other") == ([], 0)
    jobs = life.table.failures.members_of(both["signature"])
    assert sorted(j.id for j in jobs) == ["j0", "j1", "j2"]


def test_order_largest_first_then_most_recent() -> None:
    life = Lifecycle()
    errors = ["A: x", "B: y", "B: y", "C: z"]
    for i, error in enumerate(errors):
        _submit(life, f"j{i}", "h", "default", T0 + i)
        _fail(life, f"j{i}", error, C.DEAD_LETTER, T0 + i)
    views, total = life.table.failures.summary(C.DEAD_LETTER, limit=2)
    assert total == 3
    assert [(v["error_type"], v["count"]) for v in views] == [("B", 2), ("C", 1)]


def test_removing_from_the_front_stays_cheap() -> None:
    """Retrying a big group oldest first (as a bulk op walks it): each removal
    and each read of the group's ends stays O(1) (amortised)."""
    groups = FailureGroups()
    jobs = []
    for i in range(50_000):
        job = Job.new(f"j{i}", "h", 10, i, T0, DEFAULTS, None, EMPTY_ARGS, EMPTY_KWARGS,
                      EMPTY_DICT, EMPTY_LIST)
        job.status, job.error, job.completed_at = C.DEAD_LETTER, f"E: n {i}", T0 + i
        groups.add(job)
        jobs.append(job)
    (group,) = groups.groups.values()
    t0 = time.perf_counter()
    for job in jobs[:-1]:
        groups.remove(job)
        group.first_seen()
    elapsed = time.perf_counter() - t0
    assert group.first_seen() == T0 + 49_999
    assert elapsed < 2.0, elapsed     # quadratic would be minutes


def _groups_of(n_jobs: int, n_groups: int) -> FailureGroups:
    groups = FailureGroups()
    for i in range(n_jobs):
        job = Job.new(f"j{i}", "h", 10, i, T0, DEFAULTS, None, EMPTY_ARGS, EMPTY_KWARGS,
                      EMPTY_DICT, EMPTY_LIST)
        job.status, job.completed_at = C.DEAD_LETTER, T0 + i
        job.error = f"E{i % n_groups}: failed on item {i}"
        groups.add(job)
    return groups


def _best_of(fn: Any, repeats: int = 20) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def test_summary_costs_groups_not_jobs() -> None:
    """The answer's cost follows the number of groups: 100 times the jobs in
    the same 10 groups costs about the same."""
    small, big = _groups_of(2_000, 10), _groups_of(200_000, 10)
    t_small = _best_of(lambda: small.summary(C.DEAD_LETTER))
    t_big = _best_of(lambda: big.summary(C.DEAD_LETTER))
    print(f"\nsummary of 10 groups: {t_small * 1e6:.0f} us over 2,000 jobs, "
          f"{t_big * 1e6:.0f} us over 200,000 jobs")
    assert big.summary(C.DEAD_LETTER)[0][0]["count"] == 20_000
    assert t_big < 10 * t_small + 0.002


def test_hex_ids_are_ids_even_without_letters() -> None:
    assert normalise(f"job {1:032x} failed") == normalise(f"job {2**100:032x} failed") \
        == "job <id> failed"
    assert normalise("order 1234567890 of 12345678901234567890") == "order <n> of <id>"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab0x19Ff-_.:/@ \\[]<>'()%~,;")) | st.characters(),
               max_size=120))
def test_digits_other_than_zero_do_not_change_the_result(text: str) -> None:
    """What the cache relies on (`_MASK`): only `0` is told from other digits."""
    masked = text.translate(str.maketrans("23456789", "11111111"))
    assert normalise(masked) == normalise(text)
