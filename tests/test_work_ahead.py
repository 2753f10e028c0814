"""The work ahead that an evaluation states (pyro_vae/_work_ahead.py)."""

import threading

from pyro_vae._work_ahead import take, work_ahead


def test_take_counts_down_the_tiles_of_the_plans_size_and_never_below_zero():
    assert take(5) == 0  # outside a block: nothing known ahead
    with work_ahead(5, 3):
        assert take(5) == 10
        assert take(4) == 0  # another size: not in the plan, which stays as it was
        assert take(5) == 5
        assert take(5) == 0
        assert take(5) == 0
    assert take(5) == 0


def test_an_inner_block_counts_until_it_ends_and_the_outer_count_is_left_as_it_was():
    with work_ahead(10, 10):
        assert take(10) == 90
        with work_ahead(2, 3):
            assert take(2) == 4
            assert take(10) == 0
        assert take(10) == 80
    with work_ahead(4, -1):
        assert take(4) == 0


def test_a_threads_own_block_leaves_the_callers_plan_alone():
    seen = []

    def evaluate():
        with work_ahead(10, 2):
            seen.append(take(10))

    with work_ahead(10, 5):
        worker = threading.Thread(target=evaluate)
        worker.start()
        worker.join()
        assert take(10) == 40
    assert seen == [10]
