"""jobd/core/signature.py: will a submit's args bind to the handler's parameters?"""
from __future__ import annotations

import inspect
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobd.core.signature import Shape, check


def f_plain(a, b, c=3): ...
def f_star(a, *rest, key=None, **extra): ...
def f_kwonly(a, *, must, may=1): ...
def f_posonly(a, b=2, /, c=3): ...
def f_none(): ...


FUNCS = [f_plain, f_star, f_kwonly, f_posonly, f_none]
NAMES = ["a", "b", "c", "rest", "key", "extra", "must", "may", "zz"]


def binds(func: Any, nargs: int, kwargs: list[str]) -> bool:
    try:
        inspect.signature(func).bind(*range(nargs), **dict.fromkeys(kwargs))
    except TypeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FUNCS), st.integers(0, 5), st.lists(st.sampled_from(NAMES), unique=True))
def test_check_agrees_with_python_binding(func, nargs, kwargs):
    shape = Shape.of(func)
    assert shape is not None
    assert (check(shape, nargs, kwargs) is None) == binds(func, nargs, kwargs)


@pytest.mark.parametrize("func, nargs, kwargs, field, text", [
    (f_plain, 0, ["a"], "kwargs", "missing required argument 'b'"),
    (f_plain, 4, [], "args", "takes at most 3 positional argument(s), got 4"),
    (f_plain, 1, ["a", "b"], "kwargs", "argument 'a' is given both in args and in kwargs"),
    (f_plain, 2, ["zz"], "kwargs", "unexpected argument 'zz' (is not a parameter)"),
    (f_posonly, 0, ["a"], "kwargs", "unexpected argument 'a' (cannot be given by name)"),
    (f_kwonly, 1, [], "kwargs", "missing required argument 'must'"),
])
def test_what_is_wrong_is_named(func, nargs, kwargs, field, text):
    assert check(Shape.of(func), nargs, kwargs) == (field, text)       # type: ignore[arg-type]


def test_a_shape_survives_json_and_builtins_without_a_signature_have_none():
    shape = Shape.of(f_star)
    assert shape is not None and Shape.from_json(shape.to_json()) == shape
    assert Shape.of(object()) is None          # nothing to read: submits are not checked
