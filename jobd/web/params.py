"""Reading a request: the JSON body and query parameters, checked, with errors
that name the field (422)."""
from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from jobd.web.errors import bad_request, invalid

# Fields a body may not set: the request envelope on the daemon's wire (and the
# client method's own parameter names).
RESERVED = frozenset({"op", "id", "self"})
# The bulk filter fields, given at the top level of a body or as query parameters.
FILTER_FIELDS = ("status", "queue", "handler", "tag", "created_before", "created_after",
                 "error_match", "signature", "ids", "all")
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object ({} when empty); a reserved field is refused."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise bad_request(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    reserved = sorted(RESERVED & body.keys())
    if reserved:
        raise invalid(reserved[0], "is not a field of this request")
    return body


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise invalid(name, f"must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise invalid(name, f"must be between {low} and {high}")
    return value


def float_param(request: Request, name: str, high: float) -> float | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise invalid(name, f"must be a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise invalid(name, "must be >= 0")
    return min(value, high)


def bool_param(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "").lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise invalid(name, f"must be 1 or 0, got {text!r}")


def str_params(request: Request, names: tuple[str, ...]) -> dict[str, Any]:
    """The query parameters among `names` that are given and not empty;
    `status` may list several statuses separated by commas."""
    out: dict[str, Any] = {}
    for name in names:
        value = request.query_params.get(name)
        if value:
            out[name] = value
    if "status" in out and "," in out["status"]:
        out["status"] = [s for s in out["status"].split(",") if s]
    return out


def page_params(request: Request, default_limit: int, max_limit: int) -> tuple[int, int]:
    """(page from 1, limit)."""
    limit = int_param(request, "limit", default_limit, 1, max_limit)
    page = int_param(request, "page", 1, 1, 10_000_000)
    return page, limit
