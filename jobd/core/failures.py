"""Failure groups (pure): the failed and dead-letter jobs, grouped by what went wrong.

A failure is described by three things: the job's handler, the type of its
error (the exception class, or a name for the failures jobd itself writes:
a timeout, a worker that died, a poison job, a failed dependency) and the
error message normalised, numbers, ids, paths and addresses replaced by
placeholders, so `connect to 10.0.0.7:5432 failed for order 8812` and the
same failure of order 8813 are one group. A group's `signature` is a short
hash of the three, the same across restarts and releases: the rules below are
part of the contract (docs/protocol.md, "failure_groups"), and a change to
them changes signatures.

`FailureGroups` is an index of the job table (jobd/core/table.py), kept in
step by `Lifecycle` on the transitions into and out of `failed` and
`dead_letter` only, live and in replay: a successful job never reaches this
module. Each group holds its members in a dict, in the order they failed:
adding and removing one is O(1), a failed job costs one dict entry, and
count, first and last seen and the newest ids read off the dict's ends, so a
`failure_groups` answer costs O(groups), not O(jobs).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from functools import lru_cache
from itertools import islice
from typing import Any

from jobd import constants as C
from jobd.core.job import Job, iso

# The statuses whose jobs are grouped.
FAILURE_STATUSES = frozenset((C.FAILED, C.DEAD_LETTER))

SAMPLE = 5                  # ids a group shows, newest first
MAX_LINE = 1024             # of an error's first line, what is looked at
MAX_MESSAGE = 256           # of a normalised message, what is kept
CACHE_SIZE = 4096           # error lines whose description is remembered
HEX_ID = 16                 # hex digits from which a word is an id, not a number
COMPACT_SLACK = 64          # removals a group's dict may carry before it is copied

# `error_type` of the failures jobd writes itself (not an exception's class name).
TYPE_TIMEOUT = C.FAILURE_TIMEOUT
TYPE_WORKER_DIED = C.FAILURE_WORKER_DIED
TYPE_WORKER_HUNG = C.FAILURE_WORKER_HUNG
TYPE_POISON = C.FAILURE_POISON
TYPE_DEPENDENCY = C.FAILURE_DEPENDENCY
TYPE_NOT_SERIALISABLE = C.FAILURE_NOT_SERIALISABLE
TYPE_RETRY = C.FAILURE_RETRY
TYPE_UNKNOWN = C.FAILURE_UNKNOWN

# --- normalising a message ------------------------------------------------------------------
# The message is cut into words at white space (a run of it becomes one
# space); only a word with a digit, a slash, an `@`, a colon or a backslash
# in it can hold what varies, so the others cost one test each. Such a word,
# without the punctuation around it, is replaced whole when it is one thing
# (a URL, an email, an address, a path, a hex or job-id-like id, a number),
# else the numbers and hex ids inside it are. Placeholders hold none of
# those characters, so a second pass changes nothing: normalising is
# idempotent.
_TRIGGER = re.compile(r"[\d/@:\\]").search
_LEAD = "'\"`({<"                          # stripped off a word's ends before it is looked at
_TRAIL = "'\"`)}>.,;:!?"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
_EMAIL = re.compile(r"[\w.+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_IPV6 = re.compile(r"\[?(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){0,6}"
                   r"[0-9A-Fa-f]{0,4}::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{0,4})(?:%\w+)?"
                   r"(?:\]:\d{1,5}|\])?")
_HOSTPORT = re.compile(r"(?:localhost|[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+|(?:\d{1,3}\.){3}\d{1,3})"
                       r":\d{1,5}")
_PATH = re.compile(r"(?:~|\.{1,2})?/[\w.@%+~\-]+(?:/[\w.@%+~\-]*)*|[A-Za-z]:\\\S+")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_POINTER = re.compile(r"0[xX][0-9A-Fa-f]+")
_TOKEN = re.compile(r"(?=\D*\d)(?=[^A-Za-z]*[A-Za-z])[A-Za-z0-9][\w.:@/+\-]{6,}[A-Za-z0-9]")
# inside any other word, left to right: what may be part of a longer thing first
_PARTS = re.compile(r"(?P<addr>0[xX][0-9A-Fa-f]+|(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?)"
                    r"|(?P<id>[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}"
                    r"|[0-9A-Fa-f]{16,})"
                    r"|(?P<n>\d+(?:\.\d+)?)")


def _part(m: re.Match[str]) -> str:
    return f"<{m.lastgroup}>"


def _whole(core: str) -> str | None:
    """The placeholder for a word that is one thing, else None. Cheap
    tests first: most words are a number or plain text."""
    if len(core) >= HEX_ID and _HEX.fullmatch(core):
        return "<id>"           # a long hex id, even one that happens to hold no letter
    if core.isdigit():
        return "<n>"
    if ":" in core:
        if "://" in core and _URL.fullmatch(core):
            return "<url>"
        if _HOSTPORT.fullmatch(core) or _IPV6.fullmatch(core):
            return "<addr>"
    if "@" in core and _EMAIL.fullmatch(core):
        return "<addr>"
    first = core[0]
    if (first in "/~." or core[1:3] == ":\\") and _PATH.fullmatch(core):
        return "<path>"
    if first == "0" and _POINTER.fullmatch(core):
        return "<addr>"
    if len(core) >= 8 and _TOKEN.fullmatch(core):
        return "<id>"
    return None


def _word(word: str) -> str:
    core = word.lstrip(_LEAD).rstrip(_TRAIL)
    if not core:
        return word
    placeholder = _whole(core)
    if placeholder is None:
        placeholder = _PARTS.sub(_part, core)
    if len(core) == len(word):
        return placeholder
    head = word.index(core)
    return f"{word[:head]}{placeholder}{word[head + len(core):]}"


def normalise(message: str) -> str:
    """The message with what varies between occurrences of one failure
    replaced: `<n>` numbers, `<id>` uuids, long hex and job-id-like tokens,
    `<path>` file paths, `<addr>` IP addresses, host:port, 0x pointers and
    emails, `<url>` URLs. At most MAX_MESSAGE characters."""
    trigger = _TRIGGER
    words = [w if w.isalpha() or not trigger(w) else _word(w) for w in message[:MAX_LINE].split()]
    return " ".join(words)[:MAX_MESSAGE]


# --- what went wrong --------------------------------------------------------------------------
# The errors jobd writes itself (jobd/jobs.py, jobd/pool/arbiter.py,
# jobd/core/lifecycle.py, jobd/pool/child.py), by how they begin.
_DEPENDENCY = re.compile(r"dependency \S+ ended (.*)")
_WORKER = re.compile(r"worker \d+ \(pid \d+\) (died|stopped sending heartbeats)")
_EXCEPTION = re.compile(r"([A-Za-z_][\w.]{0,127}): ?(.*)")
_PREFIXES = (
    ("poison:", TYPE_POISON),
    ("handler returned a value that is not JSON-serialisable", TYPE_NOT_SERIALISABLE),
    ("retry requested after ", TYPE_RETRY),
)
_OWN = (C.ERROR_TIMEOUT, "dependency ", "worker ", *(prefix for prefix, _ in _PREFIXES))


def classify(line: str) -> tuple[str, str]:
    """(error_type, message before normalising) of an error's first line."""
    if line.startswith(_OWN):
        if line == C.ERROR_TIMEOUT:
            return TYPE_TIMEOUT, line
        for prefix, kind in _PREFIXES:
            if line.startswith(prefix):
                return kind, line
        m = _DEPENDENCY.match(line)
        if m:       # the dependency's id, whatever it looks like, is not what failed
            return TYPE_DEPENDENCY, f"dependency <id> ended {m.group(1)}"
        m = _WORKER.match(line)
        if m:
            return (TYPE_WORKER_DIED if m.group(1) == "died" else TYPE_WORKER_HUNG), line
    m = _EXCEPTION.match(line)
    if m:       # "ValueError: message", as a worker writes an exception
        return m.group(1), m.group(2)
    return TYPE_UNKNOWN, line


def signature(handler: str, error_type: str, message: str) -> str:
    """16 hex digits of a hash of the three: stable across processes and releases."""
    text = f"{handler}\x00{error_type}\x00{message}".encode("utf-8", "replace")
    return hashlib.blake2b(text, digest_size=8, person=b"jobd-failure").hexdigest()


# Normalising replaces every digit, and no rule tells one digit from another
# but `0` (a `0x` pointer): a message is normalised the same with its other
# digits all made `1`. So that form is what the cache is keyed by, and the
# same failure with other numbers (ports, counts, pids, order ids) is a cache
# hit (its ids with letters, a path with other names in it, are not).
_MASK = str.maketrans("23456789", "11111111")


@lru_cache(maxsize=CACHE_SIZE)
def _normalised(masked: str) -> str:
    return normalise(masked)


@lru_cache(maxsize=CACHE_SIZE)
def _signed(handler: str, kind: str, message: str) -> tuple[str, str, str]:
    return signature(handler, kind, message), kind, message


def describe(handler: str, error: str | None) -> tuple[str, str, str]:
    """(signature, error_type, normalised message) of a failure. Only the
    error's first line counts (the traceback follows it)."""
    line = (error or "")[:MAX_LINE].partition("\n")[0].rstrip()
    kind, message = classify(line)
    return _signed(handler, kind, _normalised(message.translate(_MASK)))


def signature_of(job: Job) -> str | None:
    """The signature of a failed or dead-letter job (None for any other status)."""
    if job.status not in FAILURE_STATUSES:
        return None
    return describe(job.handler, job.error)[0]


# --- the groups --------------------------------------------------------------------------------
def _stamp(job: Job) -> float:
    return job.completed_at or 0.0


class Group:
    """The jobs of one status and queue whose failures share a signature."""

    __slots__ = ("signature", "handler", "error_type", "message", "status", "queue",
                 "members", "removed", "newest", "unsorted")

    def __init__(self, sig: str, handler: str, error_type: str, message: str,
                 status: str, queue: str) -> None:
        self.signature = sig
        self.handler = handler
        self.error_type = error_type
        self.message = message
        self.status = status
        self.queue = queue
        self.members: dict[str, Job] = {}   # id → job, in the order they failed
        self.removed = 0                    # removals since the dict was copied: its empty slots
        self.newest = 0.0                   # the latest failure time added
        self.unsorted = False               # added out of time order (a snapshot's replay)

    def add(self, job: Job) -> None:
        stamp = _stamp(job)
        if stamp < self.newest:
            self.unsorted = True
        else:
            self.newest = stamp
        self.members[job.id] = job

    def remove(self, job: Job) -> bool:
        """Drop `job`; False when it was not a member."""
        if self.members.get(job.id) is not job:
            return False
        del self.members[job.id]
        # A dict keeps a removed entry's slot until it grows, and reading its
        # first or last member skips those slots: copy it once removals
        # outnumber members (amortised O(1) per removal).
        self.removed += 1
        if self.removed > len(self.members) + COMPACT_SLACK:
            self.members = dict(self.members)
            self.removed = 0
        return True

    def settle(self) -> None:
        """Put members added out of time order back in order (once, lazily:
        replaying a snapshot adds jobs in submit order)."""
        if self.unsorted:
            self.members = dict(sorted(self.members.items(), key=lambda kv: _stamp(kv[1])))
            self.removed = 0
            self.unsorted = False

    def first_seen(self) -> float:
        return _stamp(next(iter(self.members.values())))

    def last_seen(self) -> float:
        return _stamp(next(reversed(self.members.values())))

    def newest_ids(self) -> list[tuple[float, str]]:
        """(time, id) of the newest SAMPLE members, newest first."""
        return [(_stamp(j), j.id) for j in islice(reversed(self.members.values()), SAMPLE)]


class FailureGroups:
    """Every failed and dead-letter job of the table, in its group.

    Replay does not classify: classifying (normalising an error) costs a few
    microseconds a job, the rest of replay a few hundred nanoseconds. While
    `deferring` (from `defer` to `replayed`), a job that fails is only put
    on the `backlog`, and leaving costs nothing; `catch_up` classifies the
    backlog afterwards, a slice at a time, while the daemon serves. Until it
    is done (`pending`), answers that need every group wait for it (the
    daemon's `failure_groups` reply), and a job's membership is told from its
    error instead of the groups (`holds`, `members_of`). A job on the
    backlog that has left its status since is skipped when its turn comes,
    one that failed again is classified once, by its error now.
    """

    __slots__ = ("groups", "backlog", "_next", "deferring")

    def __init__(self) -> None:
        # (status, queue, signature) → group; a group with no member is dropped
        self.groups: dict[tuple[str, str, str], Group] = {}
        self.backlog: list[Job] = []     # failed while deferring, or since: to classify
        self._next = 0                   # the backlog before this is classified
        self.deferring = False

    def __len__(self) -> int:
        return sum(len(g.members) for g in self.groups.values())

    # --- replay: classify later ----------------------------------------------------------
    def defer(self) -> None:
        """Replay begins: failures go on the backlog, unclassified."""
        self.deferring = True

    def replayed(self) -> None:
        """Replay is over: `catch_up` may classify the backlog."""
        self.deferring = False

    @property
    def pending(self) -> int:
        """Jobs on the backlog not classified yet (some may have left since)."""
        return len(self.backlog) - self._next

    def catch_up(self, n: int) -> int:
        """Classify up to `n` jobs of the backlog, oldest first; how many are left."""
        backlog, i = self.backlog, self._next
        end = min(len(backlog), i + n)
        while i < end:
            job = backlog[i]
            i += 1
            if job.status in FAILURE_STATUSES:      # "" once deleted
                self._classify(job, once=True)
        if i == len(backlog):
            self.backlog, i = [], 0
        self._next = i
        return self.pending

    # --- the transitions ------------------------------------------------------------------
    def add(self, job: Job) -> None:
        """`job` is now failed or dead_letter (its error set)."""
        if self.deferring or self._next < len(self.backlog):
            self.backlog.append(job)       # after what waits: the groups keep failure order
            return
        self._classify(job)

    def _classify(self, job: Job, once: bool = False) -> None:
        sig, kind, message = describe(job.handler, job.error)
        key = (job.status, job.queue, sig)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(sig, job.handler, kind, message, job.status, job.queue)
        elif once and group.members.get(job.id) is job:
            return                          # on the backlog twice: it failed again
        group.add(job)

    def remove(self, job: Job) -> None:
        """`job` leaves its status (retried, deleted): before its error is cleared."""
        if self.deferring:
            return                          # nothing is classified yet: its entry goes stale
        key = (job.status, job.queue, describe(job.handler, job.error)[0])
        group = self.groups.get(key)
        if group is not None and group.remove(job) and not group.members:
            del self.groups[key]

    # --- reading --------------------------------------------------------------------------
    def holds(self, job: Job, sig: str) -> bool:
        """Is `job` a member of a group with signature `sig` now? O(1)."""
        if self.backlog:
            return signature_of(job) == sig
        group = self.groups.get((job.status, job.queue, sig))
        return group is not None and group.members.get(job.id) is job

    def members_of(self, sig: str) -> list[Job] | None:
        """Every job now in a group with signature `sig` (any status or queue);
        None while the backlog is being classified (then only a walk over
        every job can tell)."""
        if self.backlog:
            return None
        out: list[Job] = []
        for group in self.groups.values():
            if group.signature == sig:
                out.extend(group.members.values())
        return out

    def select(self, status: str, queue: str | None = None,
               handler: str | None = None) -> Iterator[Group]:
        for group in self.groups.values():
            if group.status == status and (queue is None or group.queue == queue) \
                    and (handler is None or group.handler == handler):
                yield group

    def summary(self, status: str, queue: str | None = None, handler: str | None = None,
                limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """(the groups' views, largest first, ties most recently seen first; how
        many groups there are before `limit`). A signature's groups in
        several queues are shown as one. O(groups), once the backlog is
        classified (the daemon waits for that; here it is finished first)."""
        if self.pending:
            self.catch_up(self.pending)
        merged: dict[str, list[Group]] = {}
        for group in self.select(status, queue, handler):
            group.settle()
            merged.setdefault(group.signature, []).append(group)
        views = [_view(parts) for parts in merged.values()]
        views.sort(key=lambda v: (-v["count"], -v["last_seen"], v["signature"]))
        total = len(views)
        for v in views[:limit]:
            v["first_seen"], v["last_seen"] = iso(v["first_seen"]), iso(v["last_seen"])
        return views[:limit], total


def _view(parts: list[Group]) -> dict[str, Any]:
    """One signature's groups (one per queue) as one view; times still floats."""
    head = parts[0]
    newest = sorted((p for g in parts for p in g.newest_ids()), reverse=True)[:SAMPLE]
    return {"signature": head.signature, "handler": head.handler,
            "error_type": head.error_type, "message": head.message,
            "count": sum(len(g.members) for g in parts),
            "first_seen": min(g.first_seen() for g in parts),
            "last_seen": max(g.last_seen() for g in parts),
            "sample_ids": [job_id for _, job_id in newest]}
