"""Paired comparisons against a hand computation."""

from __future__ import annotations

import math

import pytest

from cossl_train.paired import binomial_error, paired


def test_paired_statistics_by_hand() -> None:
    # CO-SimCLR and SimCLR linear top-1 of three seeds: differences +6.9, -2.6, -7.0
    p = paired("CO-SimCLR", "SimCLR", "linear top-1", [58.4, 57.8, 49.4], [51.5, 60.4, 56.4], unit=" pt")
    assert p.diffs == pytest.approx((6.9, -2.6, -7.0))
    assert p.mean == pytest.approx(-0.9)
    # deviations 7.8, -1.7, -6.1: sum of squares 100.94 over n - 1 = 2
    assert p.std == pytest.approx(math.sqrt(100.94 / 2))
    assert p.positive == 1 and p.n == 3
    # t(0.975, 2) = 4.302653 (tables), times sd / sqrt(3)
    assert p.resolvable == pytest.approx(4.302653 * math.sqrt(100.94 / 2) / math.sqrt(3), rel=1e-6)
    assert not p.resolved
    assert p.summary(1) == "-0.9 ± 7.1 pt (1/3 > 0; resolves ±17.6 pt)"
    assert "inside the seeds' spread" in p.sentence() and "neither is ahead" in p.sentence()


def test_a_resolved_difference_says_which_way_it_falls() -> None:
    lower = paired("CO-BYOL", "BYOL", "kNN", [10.0, 11.0, 12.0], [15.0, 15.5, 17.0])  # -5, -4.5, -5
    assert lower.resolved and lower.positive == 0
    assert "CO-BYOL is lower by 4.83" in lower.sentence()
    higher = paired("CO-BYOL", "BYOL", "kNN", [15.0, 15.5, 17.0], [10.0, 11.0, 12.0])
    assert "CO-BYOL is higher by 4.83" in higher.sentence()


def test_one_seed_resolves_nothing_and_mismatched_seeds_are_refused() -> None:
    one = paired("a", "b", "m", [3.0], [1.0])
    assert math.isinf(one.resolvable) and not one.resolved and "one seed" in one.sentence()
    with pytest.raises(ValueError, match="2 seeds of a against 3 of b"):
        paired("a", "b", "m", [1, 2], [1, 2, 3])


def test_binomial_error_of_an_accuracy() -> None:
    # 50 % on 512 images: sqrt(0.25 / 512) = 2.21 points
    assert binomial_error(50.0, 512, percent=True) == pytest.approx(100 * math.sqrt(0.25 / 512))
    assert binomial_error(0.5, 512) == pytest.approx(math.sqrt(0.25 / 512))
