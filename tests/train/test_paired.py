"""Paired comparisons against a hand computation."""

from __future__ import annotations

import math

import pytest

from cossl_train.paired import binomial_error, mean_std, paired


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
    # the interval (±17.6) is far wider than the difference (0.9): the seeds cannot tell, whatever the margin
    assert p.verdict(1) == ("cannot tell with 3 seeds (±17.6 pt): the 95% interval of the mean difference is wider "
                            "than the difference itself.")
    assert "no difference" not in paired("a", "b", "m", [58.4, 57.8, 49.4], [51.5, 60.4, 56.4], margin=1.0).sentence()


def test_a_resolved_difference_says_which_way_it_falls() -> None:
    lower = paired("CO-BYOL", "BYOL", "kNN", [10.0, 11.0, 12.0], [15.0, 15.5, 17.0])  # -5, -4.5, -5
    assert lower.resolved and lower.positive == 0
    assert "CO-BYOL is lower by 4.83" in lower.sentence()
    higher = paired("CO-BYOL", "BYOL", "kNN", [15.0, 15.5, 17.0], [10.0, 11.0, 12.0])
    assert "CO-BYOL is higher by 4.83" in higher.sentence()


def test_no_difference_only_where_the_interval_is_narrow() -> None:
    # differences +0.1, 0.0, +0.05: mean 0.05, sd 0.05, half-width t(0.975, 2) 0.05 / sqrt(3) = 0.124
    close = paired("a", "b", "top-1", [50.1, 50.0, 50.05], [50.0, 50.0, 50.0], " pt", margin=1.0)
    assert not close.resolved and close.negligible  # 0.05 + 0.124 <= 1
    assert close.verdict(2) == ("no difference: the 95% interval of the mean difference, +0.05 ± 0.12 pt, lies within "
                                "±1 pt, a difference too small to matter here.")
    # the same seeds with a margin inside the interval, or none at all: cannot tell
    for margin in (0.1, None):
        other = paired("a", "b", "top-1", [50.1, 50.0, 50.05], [50.0, 50.0, 50.0], " pt", margin=margin)
        assert not other.negligible and other.verdict(2).startswith("cannot tell with 3 seeds (±0.12 pt)")


def test_one_seed_prints_no_spread() -> None:
    from cossl_train.paired import mean_std_text

    assert mean_std([0.5]) == (0.5, pytest.approx(math.nan, nan_ok=True))
    assert mean_std_text([0.5], 2, " pt") == "0.50 pt (n = 1)" and mean_std_text([None]) == "-"
    assert mean_std_text([1.0, 2.0, 3.0], 1) == "2.0 ± 1.0"
    one = paired("a", "b", "m", [3.0], [1.0], " pt")
    assert "±" not in one.summary() and one.summary() == "+2.00 pt (n = 1; resolves nothing)"
    assert "0.00" not in one.sentence() and "cannot tell with one seed" in one.sentence()


def test_module_examples_run() -> None:
    import doctest

    import cossl_train.paired

    assert doctest.testmod(cossl_train.paired).failed == 0


def test_one_seed_resolves_nothing_and_mismatched_seeds_are_refused() -> None:
    one = paired("a", "b", "m", [3.0], [1.0])
    assert math.isinf(one.resolvable) and not one.resolved and "one seed" in one.sentence()
    with pytest.raises(ValueError, match="2 seeds of a against 3 of b"):
        paired("a", "b", "m", [1, 2], [1, 2, 3])


def test_binomial_error_of_an_accuracy() -> None:
    # 50 % on 512 images: sqrt(0.25 / 512) = 2.21 points
    assert binomial_error(50.0, 512, percent=True) == pytest.approx(100 * math.sqrt(0.25 / 512))
    assert binomial_error(0.5, 512) == pytest.approx(math.sqrt(0.25 / 512))
