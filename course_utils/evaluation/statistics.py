"""The two statistics a before/after accuracy needs: how sure one accuracy is, and whether a change is real.

* :func:`wilson_interval` - the 95 % Wilson score interval of a proportion. Unlike "p ± 1.96·√(p(1-p)/n)" it
  stays inside [0, 1] and does not collapse to a point at 0 % or 100 %, which matters for small test splits.
* :func:`mcnemar_exact` - McNemar's exact test for two models answering *the same* questions. Only the questions
  on which they disagree carry information: ``fixed`` (wrong before, right after) and ``broken`` (right before,
  wrong after). Under "no change" each disagreement is a fair coin flip, so the two-sided p-value is a binomial
  tail: ``min(1, 2·P[X ≤ min(fixed, broken)])`` with ``X ~ Binomial(fixed + broken, 1/2)``.
"""

from __future__ import annotations

import math


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for ``successes`` out of ``total``."""
    from scipy.stats import norm

    if total <= 0:
        raise ValueError("an interval needs at least one question (total > 0)")
    if not 0 <= successes <= total:
        raise ValueError(f"successes must lie in 0..{total}, got {successes}")
    z = norm.ppf(0.5 + confidence / 2)  # 1.95996... for 95 %
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half_width = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    low = 0.0 if successes == 0 else centre - half_width  # exact ends where rounding would leave 1e-17
    high = 1.0 if successes == total else centre + half_width
    return float(low), float(high)


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when the models never disagree)."""
    from scipy.stats import binom

    if fixed < 0 or broken < 0:
        raise ValueError("discordant counts cannot be negative")
    discordant = fixed + broken
    if discordant == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(fixed, broken), discordant, 0.5)))
