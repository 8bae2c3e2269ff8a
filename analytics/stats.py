"""Statistics for A/B/n tests on rates (opens, clicks, conversions per message sent), in pure Python.

- ``wilson_interval``: the Wilson score interval of one proportion (Wilson 1927; Newcombe 1998,
  method 3), good at small counts and near 0 or 1, where the normal ("Wald") interval
  ``normal_interval`` is too narrow or leaves [0, 1].
- ``two_proportion_z_test``: the pooled two-proportion z-test, two-sided. With more than two arms the
  caller compares the leader with each other arm and corrects for the number of comparisons
  (Bonferroni: ``bonferroni``).
- ``probabilities_to_be_best``: each arm's posterior probability of having the highest rate, with a
  Beta(1 + successes, 1 + failures) posterior per arm (a uniform prior). Two arms use Evan Miller's
  exact sum; more arms are estimated by Monte Carlo draws from the posteriors with a seeded
  generator, so the same figures always give the same answer.

The standard library's ``statistics.NormalDist`` gives the normal quantiles and tail areas.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

STANDARD_NORMAL = NormalDist()
MONTE_CARLO_DRAWS = 20_000


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class ZTest:
    """A two-sided pooled two-proportion z-test: ``z`` > 0 when the second rate is higher."""

    z: float
    p_value: float


def z_quantile(level: float) -> float:
    """The two-sided critical value for a confidence ``level`` (1.959964… for 0.95)."""
    if not 0 < level < 1:
        raise ValueError("The level is a probability between 0 and 1.")
    return STANDARD_NORMAL.inv_cdf(0.5 + level / 2)


def rate(successes: int, trials: int) -> float:
    return successes / trials if trials else 0.0


def _check(successes: int, trials: int) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError("Successes must lie between 0 and the number of trials.")


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> Interval:
    """The Wilson score interval for ``successes`` out of ``trials`` (0 to 1 when there are none)."""
    _check(successes, trials)
    if trials == 0:
        return Interval(0.0, 1.0)
    z = z_quantile(level)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials)) / (1 + z2n)
    # The formula gives exactly 0 and 1 at the ends; rounding must not move them past.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


def normal_interval(successes: int, trials: int, level: float = 0.95) -> Interval:
    """The normal-approximation (Wald) interval p ± z·√(p(1−p)/n), clipped to [0, 1]."""
    _check(successes, trials)
    if trials == 0:
        return Interval(0.0, 1.0)
    p = successes / trials
    half = z_quantile(level) * math.sqrt(p * (1 - p) / trials)
    return Interval(max(0.0, p - half), min(1.0, p + half))


def two_proportion_z_test(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> ZTest:
    """Test H0: both rates are equal, with the pooled standard error; two-sided.

    z = (p_b − p_a) / √(p̂(1 − p̂)(1/n_a + 1/n_b)), p̂ = (x_a + x_b) / (n_a + n_b). When the pooled
    rate is 0 or 1 (or an arm is empty) the rates cannot differ in the data: z = 0, p = 1.
    """
    _check(successes_a, trials_a)
    _check(successes_b, trials_b)
    if trials_a == 0 or trials_b == 0:
        return ZTest(0.0, 1.0)
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    variance = pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b)
    if variance <= 0:
        return ZTest(0.0, 1.0)
    z = (successes_b / trials_b - successes_a / trials_a) / math.sqrt(variance)
    return ZTest(z, min(1.0, 2 * (1 - STANDARD_NORMAL.cdf(abs(z)))))


def bonferroni(p_value: float, comparisons: int) -> float:
    """A p-value corrected for ``comparisons`` tests (family-wise error at most the level)."""
    return min(1.0, p_value * max(1, comparisons))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def probability_b_beats_a(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> float:
    """P(p_b > p_a) for Beta(1 + x, 1 + n − x) posteriors, exactly (Evan Miller's formula).

    P = Σ_{i=0}^{α_b−1} B(α_a + i, β_a + β_b) / ((β_b + i) · B(1 + i, β_b) · B(α_a, β_a)).
    The sum has α_b terms, each computed in logarithms; the smaller side is summed (by symmetry).
    """
    _check(successes_a, trials_a)
    _check(successes_b, trials_b)
    alpha_a, beta_a = 1 + successes_a, 1 + trials_a - successes_a
    alpha_b, beta_b = 1 + successes_b, 1 + trials_b - successes_b
    if alpha_b > alpha_a:
        # Fewer terms the other way round: P(b > a) = 1 − P(a > b) (ties have probability 0).
        return 1.0 - probability_b_beats_a(successes_b, trials_b, successes_a, trials_a)
    log_b_a = _log_beta(alpha_a, beta_a)
    total = math.fsum(
        math.exp(_log_beta(alpha_a + i, beta_a + beta_b) - math.log(beta_b + i) - _log_beta(1 + i, beta_b) - log_b_a)
        for i in range(alpha_b)
    )
    return min(1.0, max(0.0, total))


def probabilities_to_be_best(
    arms: Sequence[tuple[int, int]], *, seed: int = 0, draws: int = MONTE_CARLO_DRAWS
) -> list[float]:
    """Each arm's probability of having the highest rate; ``arms`` are (successes, trials) pairs.

    Two arms: exact. More: the share of ``draws`` joint draws from the Beta posteriors in which the
    arm's draw is the highest, with ``random.Random(seed)``.
    """
    for successes, trials in arms:
        _check(successes, trials)
    if not arms:
        return []
    if len(arms) == 1:
        return [1.0]
    if len(arms) == 2:
        (xa, na), (xb, nb) = arms
        b_wins = probability_b_beats_a(xa, na, xb, nb)
        return [1.0 - b_wins, b_wins]
    generator = random.Random(seed)  # noqa: S311 (reproducible sampling, not secrets)
    shapes = [(1 + successes, 1 + trials - successes) for successes, trials in arms]
    wins = [0] * len(arms)
    for _ in range(draws):
        best, best_value = 0, -1.0
        for index, (alpha, beta) in enumerate(shapes):
            value = generator.betavariate(alpha, beta)
            if value > best_value:
                best, best_value = index, value
        wins[best] += 1
    return [count / draws for count in wins]
