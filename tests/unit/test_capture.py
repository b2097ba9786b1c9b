"""jobd/pool/capture.py: a job's prints and console logging, sent line by line."""
from __future__ import annotations

import logging
import sys

import pytest

from jobd.pool import capture
from jobd.pool.capture import CHUNK, JobOutput, captured


@pytest.fixture(autouse=True)
def fresh_routers(monkeypatch):
    """Each test installs the routers anew and leaves the process as it was."""
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setattr(capture, "_routers", None)


def test_complete_lines_go_out_at_once_and_the_rest_at_the_end():
    sent: list[bytes] = []
    with captured(sent.append):
        print("one")
        sys.stdout.write("partial")
        assert sent == [b"one\n"]                    # a crash now keeps "one"
        print(" done", file=sys.stderr)
        sys.stdout.write("tail")
    assert b"".join(sent) == b"one\npartial done\ntail"
    print("between jobs")                          # to the real stream, not the job
    assert b"between" not in b"".join(sent)


def test_console_logging_is_captured_and_put_back():
    sent: list[bytes] = []
    handler = logging.StreamHandler(sys.stderr)        # made before the worker's first job
    logger = logging.getLogger("capture-test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with captured(sent.append):
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    assert b"".join(sent) == b"inside\n"


def test_one_long_line_is_sent_in_chunks_and_text_is_utf8():
    sent: list[bytes] = []
    out = JobOutput(sent.append)
    out.write("é" * CHUNK)                            # 2 bytes each: past CHUNK without a newline
    assert sent and sum(map(len, sent)) == 2 * CHUNK
    out.write("\udcff\n")                             # a lone surrogate is escaped, not an error
    assert sent[-1].endswith(b"\\udcff\n")
