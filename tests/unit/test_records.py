"""jobd/core/records.py: the state records' builders give the shapes the interpreter reads."""
from __future__ import annotations

from jobd import constants as C
from jobd.core import records as R
from jobd.core.lifecycle import Lifecycle


def test_builders_give_tagged_arrays_in_the_documented_order():
    assert R.start("j", 1.5, 3) == [R.START, "j", 1.5, 3]
    assert R.complete("j", 2.0, {"x": 1}, None) == [R.COMPLETE, "j", 2.0, {"x": 1}, None]
    assert R.fail("j", 3.0, "boom", C.RETRYING, 9.0) == [R.FAIL, "j", 3.0, "boom", C.RETRYING, 9.0]


def test_every_state_tag_is_distinct_and_interpreted():
    tags = [R.SUBMIT, R.START, R.PROGRESS, R.COMPLETE, R.FAIL, R.CANCEL, R.CANCEL_REQUEST,
            R.REQUEUE, R.RETRY, R.DELETE, R.SCHEDULE_ADD, R.SCHEDULE_REMOVE, R.SCHEDULE_FIRED,
            R.SEQ, R.JOBS]
    assert len(set(tags)) == len(tags)
    life = Lifecycle()
    assert set(tags) <= set(life._apply)        # the one interpreter reads each of them
