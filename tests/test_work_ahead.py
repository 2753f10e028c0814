"""The work ahead that an evaluation states (pyro_vae/_work_ahead.py)."""

import threading

from pyro_vae._work_ahead import take, work_ahead


def test_take_counts_down_the_work_ahead_and_never_below_zero():
    assert take(5) is None  # outside a block: unknown
    with work_ahead(10):
        assert take(3) == 7
        assert take(3) == 4
        assert take(9) == 0
        assert take(1) == 0
    assert take(1) is None


def test_an_inner_block_counts_until_it_ends_and_the_outer_count_is_left_as_it_was():
    with work_ahead(100):
        assert take(10) == 90
        with work_ahead(5):
            assert take(2) == 3
        assert take(10) == 80
    with work_ahead(-4):
        assert take(0) == 0


def test_the_work_ahead_is_each_thread_own():
    seen = []
    with work_ahead(10):
        worker = threading.Thread(target=lambda: seen.append(take(1)))
        worker.start()
        worker.join()
        assert take(1) == 9
    assert seen == [None]
