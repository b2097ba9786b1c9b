"""jobd/pool/capture.py: a job's prints and console logging, sent line by line."""
from __future__ import annotations

import logging
import sys

from jobd.pool.capture import CHUNK, JobOutput, captured


def test_complete_lines_go_out_at_once_and_the_rest_at_the_end():
    sent: list[bytes] = []
    before = sys.stdout, sys.stderr
    with captured(sent.append):
        print("one")
        sys.stdout.write("partial")
        assert sent == [b"one\n"]                    # a crash now keeps "one"
        print(" done", file=sys.stderr)
        sys.stdout.write("tail")
    assert b"".join(sent) == b"one\npartial done\ntail"
    assert (sys.stdout, sys.stderr) == before                         # put back


def test_console_logging_is_captured_and_put_back():
    sent: list[bytes] = []
    handler = logging.StreamHandler(sys.stderr)
    logger = logging.getLogger("capture-test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        before = handler.stream
        with captured(sent.append):
            logger.warning("inside")
        logger_stream_after = handler.stream
    finally:
        logger.removeHandler(handler)
    assert b"inside\n" in b"".join(sent)
    assert logger_stream_after is before


def test_one_long_line_is_sent_in_chunks_and_text_is_utf8():
    sent: list[bytes] = []
    out = JobOutput(sent.append)
    out.write("é" * CHUNK)                            # 2 bytes each: past CHUNK without a newline
    assert sent and sum(map(len, sent)) == 2 * CHUNK
    out.write("\udcff\n")                             # a lone surrogate is escaped, not an error
    assert sent[-1].endswith(b"\\udcff\n")
