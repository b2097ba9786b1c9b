"""A submit is checked against its handler before anything is queued: the
arguments must bind to the handler's parameters; exceptions listed in
`no_retry_for` end a job at once."""
from __future__ import annotations

import pytest
from conftest import T

from jobd_client import JobdError

FAST = "[retry]\nretry_delay = 0.01\nretry_backoff = 1.0\njitter = false\n"


@pytest.mark.parametrize("args, kwargs, message", [
    ([], {"to": "a"}, "kwargs: missing required argument 'subject'"),
    (["a", "s", "x"], {}, "args: takes at most 2 positional argument(s), got 3"),
    (["a"], {"to": "b", "subject": "s"}, "kwargs: argument 'to' is given both in args and in kwargs"),
    (["a", "s"], {"nope": 1}, "kwargs: unexpected argument 'nope' (is not a parameter)"),
])
def test_a_call_that_cannot_bind_is_refused_naming_the_parameter(daemon, args, kwargs, message):
    c = daemon.client()
    with pytest.raises(JobdError) as e:
        c.submit(T + "greet", args=args, kwargs=kwargs)
    assert e.value.code == "invalid_argument" and e.value.message == message, e.value.message
    with pytest.raises(JobdError) as many:
        c.submit_many([{"handler": T + "greet", "args": ["a", "s"]},
                       {"handler": T + "greet", "args": args, "kwargs": kwargs}])
    assert many.value.code == "invalid_argument" and message in many.value.message
    assert c.metrics()["queue"]["pending"] == 0                 # nothing was queued


def test_calls_that_bind_are_accepted_and_run(daemon):
    c = daemon.client()
    ok = [c.submit(T + "greet", args=["bob"], kwargs={"subject": "hi", "loud": True}),
          c.submit(T + "greet", kwargs={"to": "ann", "subject": "yo"}),
          c.submit(T + "echo", args=[1, 2, 3], kwargs={"any": "thing"}),
          c.submit(T + "noop")]
    results = [c.wait(j, timeout=15).result for j in ok]
    assert results[:2] == ["hi to bob!", "yo to ann"]


def test_a_schedule_whose_args_cannot_bind_is_refused(daemon):
    c = daemon.client()
    with pytest.raises(JobdError) as e:
        c.call("schedule_add", name="bad", cron="0 3 * * *", handler=T + "greet", args=["only-to"])
    assert e.value.code == "invalid_argument"
    assert e.value.message == "kwargs: missing required argument 'subject'"


def test_no_retry_for_ends_the_job_failed_at_once(make_daemon):
    d = make_daemon(workers=1, config=FAST + f'[handler."{T}always_fail"]\n'
                                             'no_retry_for = ["RuntimeError"]\n')
    c = d.client(timeout=30)
    decorated = c.wait(c.submit(T + "picky", args=["value"]), timeout=15)
    assert (decorated.status, decorated.attempts) == ("failed", 1), decorated
    assert "ValueError: bad input" in decorated.error
    other = c.wait(c.submit(T + "picky", args=["runtime"], max_retries=2), timeout=15)
    assert (other.status, other.attempts) == ("dead_letter", 3)        # not listed: retried
    configured = c.wait(c.submit(T + "always_fail", max_retries=5), timeout=15)
    assert (configured.status, configured.attempts) == ("failed", 1)     # from the config


def test_no_retry_for_naming_nothing_is_a_config_error(make_daemon):
    d = make_daemon(start=False, workers=0,
                    config=f'[handler."{T}always_fail"]\nno_retry_for = ["nosuchmod.Boom"]\n')
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(30) == 78, d.log()
    assert 'handler."jobd_testhandlers.always_fail".no_retry_for' in d.log()
