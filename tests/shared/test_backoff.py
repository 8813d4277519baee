"""The shared backoff: exact doubling up to the cap, reset, skip, and jitter as a share of the delay."""

from __future__ import annotations

import random

import pytest

from shared.backoff import Backoff


def delays(backoff: Backoff, n: int) -> list[float]:
    return [backoff.next() for _ in range(n)]


def test_doubles_up_to_the_cap_and_stays_there():
    assert delays(Backoff(0.1, cap=1.0), 6) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert delays(Backoff(0.25, cap=5.0), 7) == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_same_delays_as_the_closed_form():
    backoff = Backoff(0.5, cap=30.0)
    assert delays(backoff, 12) == [min(30.0, 0.5 * 2 ** n) for n in range(12)]


def test_other_factors_and_no_cap():
    assert delays(Backoff(1.0, factor=3.0), 4) == [1.0, 3.0, 9.0, 27.0]
    assert delays(Backoff(2.0, factor=1.0), 3) == [2.0, 2.0, 2.0]


def test_the_first_delay_is_the_initial_one_even_above_the_cap():
    assert delays(Backoff(0.5, cap=0.1), 3) == [0.5, 0.1, 0.1]


def test_zero_stays_zero():
    assert delays(Backoff(0.0, cap=1.0), 3) == [0.0, 0.0, 0.0]


def test_reset_starts_over():
    backoff = Backoff(0.1, cap=5.0)
    delays(backoff, 4)
    backoff.reset()
    assert backoff.current == 0.1
    assert delays(backoff, 2) == [0.1, 0.2]


def test_skip_advances_without_a_draw():
    draws: list[float] = []

    def rng() -> float:
        draws.append(0.5)
        return 0.5

    backoff = Backoff(0.5, cap=10.0, jitter=1.0, rng=rng)
    backoff.skip()
    backoff.skip()
    assert draws == [] and backoff.current == 2.0
    assert backoff.next() == 1.0 and draws == [0.5]
    assert backoff.current == 4.0


def test_without_jitter_the_generator_is_never_used():
    def rng() -> float:
        raise AssertionError("drawn without jitter")

    assert delays(Backoff(0.2, cap=5.0, rng=rng), 3) == [0.2, 0.4, 0.8]


def test_full_jitter_scales_the_whole_delay():
    assert delays(Backoff(0.5, cap=4.0, jitter=1.0, rng=lambda: 1.0), 5) == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert delays(Backoff(0.5, cap=4.0, jitter=1.0, rng=lambda: 0.25), 3) == [0.125, 0.25, 0.5]
    assert delays(Backoff(0.5, cap=4.0, jitter=1.0, rng=lambda: 0.0), 2) == [0.0, 0.0]


def test_half_jitter_keeps_at_least_half_the_delay():
    assert delays(Backoff(1.0, cap=8.0, jitter=0.5, rng=lambda: 0.0), 3) == [0.5, 1.0, 2.0]
    assert delays(Backoff(1.0, cap=8.0, jitter=0.5, rng=lambda: 0.5), 3) == [0.75, 1.5, 3.0]


def test_jitter_matches_the_formulas_it_replaces_bit_for_bit():
    rnd = random.Random(7)
    for _ in range(200):
        r = rnd.random()
        d = rnd.uniform(0.0, 30.0)
        # equal-ish jitter: d * (0.5 + r / 2); full jitter: r * d and uniform(0, d)
        assert Backoff(d, jitter=0.5, rng=lambda r=r: r).next() == d * (0.5 + r / 2)
        assert Backoff(d, jitter=1.0, rng=lambda r=r: r).next() == r * d
        assert Backoff(d, jitter=1.0, rng=lambda r=r: r).next() == 0 + (d - 0) * r


def test_default_generator_is_the_random_module():
    random.seed(11)
    expected = [0.25 * 2 ** n * random.random() for n in range(4)]
    random.seed(11)
    assert delays(Backoff(0.25, jitter=1.0), 4) == expected


@pytest.mark.parametrize("kwargs", [{"initial": -1.0}, {"initial": 1.0, "cap": -1.0}, {"initial": 1.0, "factor": 0.5},
                                    {"initial": 1.0, "jitter": 1.5}, {"initial": 1.0, "jitter": -0.1}])
def test_rejects_nonsense(kwargs: dict[str, float]):
    with pytest.raises(ValueError):
        Backoff(**kwargs)
