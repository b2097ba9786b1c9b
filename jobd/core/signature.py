"""Will a submit's args and kwargs bind to its handler's parameters? (pure)

A `Shape` is what a handler function's signature says about calls to it,
reduced to plain data (it can be sent as JSON from a fork server that
imported new code). `check` answers for one submit, in a few comparisons for
the usual call: a wrong call is refused at submit with `invalid_argument`
naming the parameter, instead of burning every retry on a `TypeError`.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, slots=True)
class Shape:
    positional: tuple[str, ...]      # parameters that can be given by position, in order
    required: tuple[str, ...]        # parameters without a default (not *args/**kwargs)
    named: frozenset[str]            # parameters that can be given by name
    var_args: bool                   # takes *args
    var_kwargs: bool                 # takes **kwargs

    @classmethod
    def of(cls, func: Callable[..., Any]) -> Shape | None:
        """The shape of `func`'s signature; None when it has none to read."""
        try:
            params = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):
            return None
        kinds = inspect.Parameter
        return cls(
            positional=tuple(p.name for p in params if p.kind in _POSITIONAL),
            required=tuple(p.name for p in params if p.default is kinds.empty
                           and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)),
            named=frozenset(p.name for p in params
                            if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)),
            var_args=any(p.kind is kinds.VAR_POSITIONAL for p in params),
            var_kwargs=any(p.kind is kinds.VAR_KEYWORD for p in params))

    def to_json(self) -> list[Any]:
        return [list(self.positional), list(self.required), sorted(self.named),
                self.var_args, self.var_kwargs]

    @classmethod
    def from_json(cls, data: list[Any]) -> Shape:
        return cls(tuple(data[0]), tuple(data[1]), frozenset(data[2]), bool(data[3]),
                   bool(data[4]))


def check(shape: Shape, nargs: int, kwargs: Collection[str]) -> tuple[str, str] | None:
    """None if `nargs` positional arguments and the names in `kwargs` bind
    to `shape`; else (the field to blame, "args" or "kwargs", and why)."""
    if not kwargs and not shape.required and (nargs == 0 or shape.var_args):
        return None                                  # the usual no-argument call
    if nargs > len(shape.positional) and not shape.var_args:
        return "args", (f"takes at most {len(shape.positional)} positional argument(s), "
                        f"got {nargs}")
    by_position = shape.positional[:nargs]
    for name in kwargs:
        if name in by_position:
            return "kwargs", f"argument {name!r} is given both in args and in kwargs"
        if name not in shape.named and not shape.var_kwargs:
            what = "cannot be given by name" if name in shape.positional else "is not a parameter"
            return "kwargs", f"unexpected argument {name!r} ({what})"
    for name in shape.required:
        if name not in by_position and name not in kwargs:
            return "kwargs", f"missing required argument {name!r}"
    return None
