"""The statistics behind experiments, against textbook and hand-computed values."""

from __future__ import annotations

import math

import pytest

from analytics import stats
from analytics.experiments import ArmCount, experiment_verdict


def close(a: float, b: float, tolerance: float = 5e-5) -> bool:
    return abs(a - b) <= tolerance


# --- intervals -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombes_table(successes, trials, low, high):
    interval = stats.wilson_interval(successes, trials, 0.95)
    assert close(interval.low, low) and close(interval.high, high), interval


def test_wilson_interval_by_hand_and_at_the_edges():
    # 5 of 10 at 95 %: z = 1.959964; centre = (0.5 + z²/20) / (1 + z²/10) = 0.5 exactly;
    # half = z·√(0.025 + z²/400) / (1 + z²/10) = 1.959964 × √0.0346036 / 1.384146 = 0.263407.
    interval = stats.wilson_interval(5, 10, 0.95)
    assert close(interval.low, 0.5 - 0.263407, 1e-5) and close(interval.high, 0.5 + 0.263407, 1e-5)
    assert stats.wilson_interval(10, 10).high == 1.0 and stats.wilson_interval(0, 10).low == 0.0
    assert stats.wilson_interval(0, 0) == stats.Interval(0.0, 1.0)
    at_80, at_99 = stats.wilson_interval(50, 100, 0.80), stats.wilson_interval(50, 100, 0.99)
    assert at_99.low < at_80.low < 0.5 < at_80.high < at_99.high
    with pytest.raises(ValueError):
        stats.wilson_interval(11, 10)


def test_normal_interval_is_the_wald_interval_clipped():
    # 20 of 100: 0.2 ± 1.959964 × √(0.2 × 0.8 / 100) = 0.2 ± 0.078399.
    interval = stats.normal_interval(20, 100, 0.95)
    assert close(interval.low, 0.121601, 1e-6) and close(interval.high, 0.278399, 1e-6)
    assert stats.normal_interval(1, 100).low == 0.0, "clipped at 0 (the raw bound is negative)"


def test_z_quantiles():
    assert close(stats.z_quantile(0.95), 1.959964, 1e-6)
    assert close(stats.z_quantile(0.90), 1.644854, 1e-6)
    assert close(stats.z_quantile(0.99), 2.575829, 1e-6)


# --- z-test --------------------------------------------------------------------------------------------
def test_two_proportion_z_test_by_hand():
    # 200/1000 against 250/1000: pooled 0.225; se = √(0.225 × 0.775 × 2/1000) = 0.0186749;
    # z = 0.05 / 0.0186749 = 2.67740; two-sided p = 2 × (1 − Φ(2.6774)) = 0.00742.
    test = stats.two_proportion_z_test(200, 1000, 250, 1000)
    assert close(test.z, 2.67740, 1e-4)
    assert close(test.p_value, 0.00742, 1e-4)
    reverse = stats.two_proportion_z_test(250, 1000, 200, 1000)
    assert close(reverse.z, -test.z, 1e-12) and close(reverse.p_value, test.p_value, 1e-12)


def test_z_test_just_significant_at_95_percent():
    # 10/100 against 20/100: pooled 0.15; se = √(0.15 × 0.85 × 0.02) = √0.00255 = 0.0504975;
    # z = 0.1 / 0.0504975 = 1.98030 > 1.95996; p = 2 × (1 − Φ(1.9803)) = 0.04767 < 0.05.
    test = stats.two_proportion_z_test(10, 100, 20, 100)
    assert close(test.z, 0.1 / math.sqrt(0.15 * 0.85 * 0.02), 1e-12)
    assert close(test.z, 1.98030, 1e-5) and close(test.p_value, 0.04767, 1e-5)


def test_z_test_without_variation_says_nothing():
    assert stats.two_proportion_z_test(0, 50, 0, 50) == stats.ZTest(0.0, 1.0)
    assert stats.two_proportion_z_test(50, 50, 50, 50) == stats.ZTest(0.0, 1.0)
    assert stats.two_proportion_z_test(3, 10, 0, 0) == stats.ZTest(0.0, 1.0)
    assert stats.bonferroni(0.02, 2) == 0.04 and stats.bonferroni(0.7, 2) == 1.0


# --- Bayesian ------------------------------------------------------------------------------------------
def test_probability_b_beats_a_by_hand():
    # Beta(1, 1) each: a coin toss.
    assert close(stats.probability_b_beats_a(0, 0, 0, 0), 0.5, 1e-12)
    # A 0 of 1 → Beta(1, 2), density 2(1 − y); B 1 of 1 → Beta(2, 1), density 2x.
    # P(B > A) = ∫₀¹ 2x ∫₀ˣ 2(1 − y) dy dx = ∫₀¹ 2x(2x − x²) dx = 4/3 − 1/2 = 5/6.
    assert close(stats.probability_b_beats_a(0, 1, 1, 1), 5 / 6, 1e-12)
    assert close(stats.probability_b_beats_a(1, 1, 0, 1), 1 / 6, 1e-12)
    # A 1 of 2 → Beta(2, 2); B 2 of 2 → Beta(3, 1): P(B > A) = ∫₀¹ 3x² (3x² − 2x³) dx = 9/5 − 1 = 4/5.
    assert close(stats.probability_b_beats_a(1, 2, 2, 2), 4 / 5, 1e-12)


def test_probability_agrees_with_the_normal_approximation_at_large_counts():
    # 100/1000 against 120/1000: the posteriors are nearly normal, the difference 0.02 with sd
    # √(0.1·0.9/1000 + 0.12·0.88/1000) ≈ 0.013987 → Φ(1.4299) ≈ 0.9236.
    assert close(stats.probability_b_beats_a(100, 1000, 120, 1000), 0.9236, 0.003)
    many = stats.probability_b_beats_a(40_000, 100_000, 40_500, 100_000)
    assert close(many, 0.98869, 1e-4)


def test_monte_carlo_matches_the_exact_formula_and_is_reproducible():
    arms = [(30, 200), (42, 200), (30, 200)]
    first = stats.probabilities_to_be_best(arms, seed=7)
    assert first == stats.probabilities_to_be_best(arms, seed=7), "seeded: the same answer every time"
    assert close(sum(first), 1.0, 1e-9) and close(first[0], first[2], 0.02), "equal arms, equal chances"
    # With an arm that can never be best (0 of 1,000), the other two are a two-arm question.
    pair = stats.probabilities_to_be_best([(30, 200), (42, 200), (0, 1000)], seed=1)
    exact = stats.probability_b_beats_a(30, 200, 42, 200)
    assert close(pair[1], exact, 0.01) and pair[2] == 0.0
    assert stats.probabilities_to_be_best([(1, 2), (2, 2)]) == pytest.approx([0.2, 0.8])


# --- the verdict ---------------------------------------------------------------------------------------
def arms(*counts: tuple[int, int]) -> list[ArmCount]:
    return [ArmCount(i + 1, "ABCD"[i], sent, hits) for i, (sent, hits) in enumerate(counts)]


def test_z_test_verdict_picks_a_significant_winner_with_its_reason():
    verdict = experiment_verdict(arms=arms((1000, 200), (1000, 250)), method="z_test", level=0.95, fallback="control")
    assert verdict.significant and verdict.winner_id == 2 and verdict.leader_id == 2
    assert close(verdict.p_value or 0, 0.00742, 1e-4)
    a, b = verdict.arms
    assert (a.rate, b.rate) == (0.2, 0.25) and b.p_value is None and close(a.p_value or 0, 0.00742, 1e-4)
    assert close(a.ci_low, stats.wilson_interval(200, 1000).low, 1e-12)
    assert "“B” had the best click rate, 25.0 % against 20.0 % for “A”" in verdict.reason
    assert "significant at the 95 % level (two-proportion z-test, p = 0.0074)" in verdict.reason
    # At 99.5 % the same data is not enough: the fallback applies.
    strict = experiment_verdict(arms=arms((1000, 200), (1000, 250)), method="z_test", level=0.995, fallback="control")
    assert not strict.significant and strict.winner_id == 1
    assert strict.reason.endswith("as configured, the rest gets the control, “A”.")


def test_a_b_n_z_test_corrects_for_several_comparisons():
    # B against A: p = 0.00742; B against C (230/1000): pooled 0.24, z = 1.0472, p = 0.2950 → ×2 = 0.5900.
    verdict = experiment_verdict(
        arms=arms((1000, 200), (1000, 250), (1000, 230)), method="z_test", level=0.95, fallback="best_observed"
    )
    a, _b, c = verdict.arms
    assert close(a.p_value or 0, 2 * 0.007420, 1e-4) and close(c.p_value or 0, 0.5900, 1e-3)
    assert not verdict.significant and verdict.winner_id == 2, "fallback: the best observed"
    assert close(verdict.p_value or 0, 0.5900, 1e-3)
    assert "the rest gets “B”, the best observed click rate (25.0 %)" in verdict.reason


def test_bayesian_verdict():
    verdict = experiment_verdict(
        arms=arms((1, 0), (1, 1)), method="bayesian", level=0.8, fallback="none", metric="conversion"
    )
    assert verdict.significant and verdict.winner_id == 2 and verdict.probability == pytest.approx(5 / 6)
    assert "83.3 % probability of the best conversion rate" in verdict.reason
    undecided = experiment_verdict(arms=arms((1, 0), (1, 1)), method="bayesian", level=0.9, fallback="none")
    assert not undecided.significant and undecided.winner_id is None
    assert undecided.reason.endswith("as configured, the rest of the audience is not sent.")


def test_an_arm_without_messages_makes_the_test_undecidable():
    verdict = experiment_verdict(arms=arms((100, 90), (0, 0)), method="z_test", level=0.95, fallback="control")
    assert not verdict.significant and verdict.winner_id == 1
    assert verdict.reason.startswith("“B” had no message sent")
