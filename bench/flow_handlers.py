"""100 no-op handlers, `bench.h0` … `bench.h99`, for bench/flow.py (dispatch while most
handlers are paused), which names them without importing this module (the bench client
does not import the daemon's code). Loaded only by that scenario's daemons, so every other
scenario's daemon registers the same handlers as before."""
from __future__ import annotations

from collections.abc import Callable

from jobd import handler

COUNT = 100


def name(i: int) -> str:
    return f"bench.h{i}"


def _noop() -> Callable[[], None]:
    def noop() -> None:
        """Does nothing (a function of its own per handler: the registry marks it)."""
    return noop


for _i in range(COUNT):
    handler(name=name(_i))(_noop())
