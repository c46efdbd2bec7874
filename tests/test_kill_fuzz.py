"""SIGKILL at random moments of ``train``, ``lifter train`` and ``eval`` (its feature cache), rerun each time:
the final state is bit-identical to an uninterrupted run and no temporary file is left (tests/_kill_fuzz.py)."""

from __future__ import annotations

import random

import pytest

from _kill_fuzz import fuzz_eval, fuzz_lifter, fuzz_train

KILLS = 2  # per command here; python tests/_kill_fuzz.py DATA KILLS for the figures with more


@pytest.mark.slow
@pytest.mark.parametrize("run", [fuzz_train, fuzz_lifter, fuzz_eval], ids=["train", "lifter-train", "eval"])
def test_killed_at_random_moments_the_rerun_ends_bit_identical(run, rooms, tmp_path):
    res = run(rooms, tmp_path, KILLS, random.Random(sum(map(ord, run.__name__))))
    print(res.line())
    assert res.kills == KILLS
    assert res.max_abs_diff == 0.0
    assert res.temp_files_left == 0
