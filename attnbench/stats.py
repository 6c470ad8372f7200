"""Statistics over seeds: mean, spread and confidence interval of one attention's runs; pairwise Welch t-tests with
Holm's correction; MHE's performance retention ratio with a confidence interval; an exact test of success counts
over strata (seeds that solve a task, per width). Built on scipy.stats.

Library code: every function returns plain data (floats, None where a figure is undefined); report/ and the CLI
render it, with `format_p` and the `verdict` strings made here.
"""

from __future__ import annotations

import inspect
import math
from typing import Sequence

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95  # every interval here is a 95 % interval
ALPHA = 1 - CONFIDENCE  # two attentions are called different when their Holm-adjusted p is below this
N_RESAMPLES = 9999  # bootstrap resamples (scipy's default)
TOO_FEW = "too few runs"  # the verdict when a group has fewer than two values


def _values(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    if not np.isfinite(x).all():
        raise ValueError(f"non-finite value among {list(values)}")
    return x


def _sd(x: np.ndarray) -> float:
    """Sample standard deviation (ddof=1); exactly 0 for identical values (no rounding residue from the mean)."""
    return 0.0 if np.ptp(x) == 0 else float(x.std(ddof=1))


def summary(values: Sequence[float]) -> dict:
    """n, mean, std (ddof=1) and the 95 % confidence interval of the mean (Student t, n - 1 degrees of freedom).

    std and the interval are None for n < 2; for identical values the interval is the point [mean, mean].
    """
    x = _values(values)
    out = {"n": len(x), "mean": None, "std": None, "ci_low": None, "ci_high": None}
    if len(x) == 0:
        return out
    out["mean"] = mean = float(x.mean())
    if len(x) < 2:
        return out
    out["std"] = sd = _sd(x)
    if sd == 0:
        out["ci_low"] = out["ci_high"] = mean
    else:  # mean ± t_{0.975, n-1} · sd / sqrt(n)
        lo, hi = sps.t.interval(CONFIDENCE, len(x) - 1, loc=mean, scale=sd / math.sqrt(len(x)))
        out["ci_low"], out["ci_high"] = float(lo), float(hi)
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979, "A simple sequentially rejective multiple test procedure",
    Scand. J. Statist. 6:65-70): the i-th smallest of m p-values is multiplied by m - i + 1, capped at 1 and made
    non-decreasing in that order. Rejecting where adjusted p < alpha controls the family-wise error rate at alpha."""
    p = list(pvalues)
    m = len(p)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=p.__getitem__)):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def format_p(p: float | None, name: str = "p") -> str:
    """'p=0.003', 'p<0.001', 'p=0.41'; two significant digits (three near 0.05, so that 0.0496 does not read 0.05)."""
    if p is None:
        return f"{name} n/a"
    if p < 0.001:
        return f"{name}<0.001"
    return f"{name}={p:.{3 if 0.04 <= p < 0.06 else 2}g}"


def verdict(a: str, b: str, diff: float | None, p_holm: float | None, higher_is_better: bool,
            alpha: float = ALPHA) -> str:
    """'a better than b (p_holm=0.003)' when the Holm-adjusted p is below alpha, else 'cannot be told apart
    (p_holm=0.41)'; diff is mean(a) - mean(b)."""
    if p_holm is None or diff is None:
        return TOO_FEW
    if p_holm >= alpha:
        return f"cannot be told apart ({format_p(p_holm, 'p_holm')})"
    a_wins = (diff > 0) == higher_is_better
    better, worse = (a, b) if a_wins else (b, a)
    return f"{better} better than {worse} ({format_p(p_holm, 'p_holm')})"


def welch(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's t-test of mean(a) = mean(b) (what scipy.stats.ttest_ind(equal_var=False) computes) and the 95 %
    interval of mean(a) - mean(b) with the Welch-Satterthwaite degrees of freedom (Welch 1947, Biometrika 34:28-35,
    eq. 9 there; what scipy >= 1.11 returns as ttest_ind(...).confidence_interval()). None where n < 2 in either
    group or neither group varies (the t statistic is undefined). The contrast (1, -1) of two groups (`contrast`),
    by its formula rather than scipy's call: scipy prints a precision warning on seeds that agree to the last digits
    (MQAR runs at accuracy 1.0), which the report would print as noise (tests/test_stats.py: scipy's figures)."""
    x, y = _values(a), _values(b)
    out = {"n_a": len(x), "n_b": len(y), "mean_a": float(x.mean()) if len(x) else None,
           "mean_b": float(y.mean()) if len(y) else None}
    c = contrast([x, y], [1.0, -1.0])
    return {**out, **{k: c[k] for k in ("diff", "ci_low", "ci_high", "t", "df", "p")}}


def contrast(groups: Sequence[Sequence[float]], weights: Sequence[float]) -> dict:
    """A linear contrast of group means, L = sum_i w_i mean_i, tested against 0 without assuming equal variances:
    SE² = sum_i w_i² s_i² / n_i, t = L / SE, and Student's t at the Welch-Satterthwaite degrees of freedom
    df = (sum_i w_i² s_i²/n_i)² / sum_i (w_i² s_i²/n_i)² / (n_i - 1) (Satterthwaite 1946, Biometrics Bull. 2:110-114;
    Welch 1947 for two groups, where weights (1, -1) give Welch's t-test). Two-sided p and the 95 %
    interval of L. The factorial effects of a 2^k design of unequal cell variances are such contrasts
    (report/paper.py's ablation); with equal n and weights of one magnitude t equals the ANOVA effect's t (its
    pooled variance is then the cells' mean variance), only the df differ. diff (L) is None where a group with a
    non-zero weight is empty; t, df, p and the interval are None where such a group has n < 2 or none varies."""
    xs, w = [_values(g) for g in groups], [float(v) for v in weights]
    if len(xs) != len(w):
        raise ValueError(f"{len(xs)} groups and {len(w)} weights")
    used = [(x, wi) for x, wi in zip(xs, w) if wi != 0]
    out = {"diff": None, "ci_low": None, "ci_high": None, "t": None, "df": None, "p": None}
    if not used or any(len(x) == 0 for x, _ in used):
        return out
    out["diff"] = float(sum(wi * x.mean() for x, wi in used))
    if any(len(x) < 2 for x, _ in used):
        return out
    parts = [wi**2 * _sd(x) ** 2 / len(x) for x, wi in used]  # each group's share of Var(L)
    var = sum(parts)
    if var == 0:
        return out
    df = var**2 / sum(v**2 / (len(x) - 1) for v, (x, _) in zip(parts, used))
    t = out["diff"] / math.sqrt(var)
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df)) * math.sqrt(var)
    out.update({"t": float(t), "df": float(df), "p": float(2 * sps.t.sf(abs(t), df)),
                "ci_low": out["diff"] - half, "ci_high": out["diff"] + half})
    return out


def paired(a: Sequence[float], b: Sequence[float]) -> dict:
    """The paired t-test of mean(a - b) = 0 (scipy.stats.ttest_rel): a[i] and b[i] are one run measured twice (one
    seed's model scored at two context lengths). diff is mean(a - b), its 95 % interval Student's with n - 1 degrees
    of freedom (stats.summary of the differences). p is None where n < 2 or the differences do not vary."""
    x, y = _values(a), _values(b)
    if len(x) != len(y):
        raise ValueError(f"paired values of unequal length: {len(x)} and {len(y)}")
    d = summary(x - y)
    out = {"n": d["n"], "diff": d["mean"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "t": None, "p": None}
    if d["n"] >= 2 and d["std"]:
        res = sps.ttest_rel(x, y)
        out.update({"t": float(res.statistic), "p": float(res.pvalue)})
    return out


def exact_strata(strata: Sequence[tuple[int, int, int, int]]) -> dict:
    """Do groups A and B succeed equally often? The conditional exact test over strata (Mehta, Patel & Gray 1985,
    JASA 80:969-973; R's mantelhaen.test(exact = TRUE) for 2 x 2 x K tables): stratum k holds a_k successes of n_k
    runs of A and b_k of m_k of B. Given each stratum's margins, A's successes there follow the hypergeometric law
    (Fisher's exact test), and T = sum_k a_k follows the convolution of those laws. Two-sided p: the probability of
    every T no more likely than the observed one (scipy.stats.fisher_exact's convention, relative tolerance 1e-7),
    so one stratum gives Fisher's exact p. diff: A's success rate over all its runs less B's. p is None where no
    stratum can vary (each has every run succeeded or every run failed)."""
    cells = [tuple(int(v) for v in s) for s in strata]
    for a, n, b, m in cells:
        if not (0 <= a <= n and 0 <= b <= m):
            raise ValueError(f"a stratum of {a} of {n} and {b} of {m} successes")
    a_tot, n_tot = sum(c[0] for c in cells), sum(c[1] for c in cells)
    b_tot, m_tot = sum(c[2] for c in cells), sum(c[3] for c in cells)
    out = {"a": a_tot, "n": n_tot, "b": b_tot, "m": m_tot, "p": None,
           "diff": a_tot / n_tot - b_tot / m_tot if n_tot and m_tot else None}
    pmf, lo = np.ones(1), 0
    for a, n, b, m in cells:
        s = a + b
        ks = np.arange(max(0, s - m), min(n, s) + 1)  # A's possible successes given the stratum's margins
        pmf, lo = np.convolve(pmf, sps.hypergeom.pmf(ks, n + m, s, n)), lo + ks[0]
    if len(pmf) > 1:
        observed = pmf[a_tot - lo]
        out["p"] = float(min(1.0, pmf[pmf <= observed * (1 + 1e-7)].sum()))
    return out


def adjust(tests: list[dict]) -> list[dict]:
    """Holm's adjusted p (holm) into each test dict of one family as "p_holm", over those with a p; None elsewhere.
    Returns the same list."""
    tested = [t for t in tests if t["p"] is not None]
    for t, adj in zip(tested, holm([t["p"] for t in tested])):
        t["p_holm"] = adj
    for t in tests:
        t.setdefault("p_holm", None)
    return tests


def pairwise(groups: dict[str, Sequence[float]], higher_is_better: bool, alpha: float = ALPHA) -> list[dict]:
    """Every pair (a, b) of groups in the given order: Welch's t-test (see welch), the raw p and the Holm-adjusted
    p over the pairs that could be tested (one family per call: call it once per metric), and a verdict string.
    A pair with a group of fewer than two values has p None and the verdict 'too few runs'."""
    names = list(groups)
    rows = [{"a": a, "b": b, **welch(groups[a], groups[b])} for i, a in enumerate(names) for b in names[i + 1:]]
    for r in adjust(rows):
        if r["p"] is None and r["n_a"] >= 2 and r["n_b"] >= 2:
            r["verdict"] = "no spread in either group: not testable"
        else:
            r["verdict"] = verdict(r["a"], r["b"], r["diff"], r["p_holm"], higher_is_better, alpha)
    return rows


def _ratio_of_means(num, den, axis=-1):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mean(num, axis=axis) / np.mean(den, axis=axis)


def _bootstrap_kw(seed: int) -> dict:
    """scipy >= 1.15 takes rng=, older versions random_state= (SPEC 7); both accept a Generator."""
    gen = np.random.default_rng(seed)
    return {"rng": gen} if "rng" in inspect.signature(sps.bootstrap).parameters else {"random_state": gen}


def _delta_interval(num: np.ndarray, den: np.ndarray, r: float, paired: bool) -> tuple[float, float]:
    """The delta method for r = mean(num) / mean(den) (Casella & Berger 2002, §5.5.4): r is linearised as
    (mean(num) - r mean(den)) / mean(den), so Var(r) ~ (sx²/nx + r² sy²/ny) / my², or Var(x - r y) / (n my²) for
    paired seeds; r ± t · sqrt(Var) with Student t on the Welch-Satterthwaite degrees of freedom (Welch 1947), n - 1
    when paired. The t quantile (not z) keeps the interval's coverage near 95 % at three to five seeds."""
    if paired:
        var, df = _sd(num - r * den) ** 2 / len(num), len(num) - 1
    else:
        a, b = _sd(num) ** 2 / len(num), r * r * _sd(den) ** 2 / len(den)
        var = a + b
        df = var**2 / (a * a / (len(num) - 1) + b * b / (len(den) - 1)) if var > 0 else math.inf
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df)) * math.sqrt(var) / abs(float(den.mean()))
    return r - half, r + half


def retention_ratio(scores: Sequence[float], baseline: Sequence[float], paired: bool = False, seed: int = 0,
                    higher_is_better: bool = True) -> dict:
    """MHE's performance retention ratio (Xue & Aletras 2023, arXiv 2310.07911: an attention's score divided by MHA's
    on the same task): mean(scores) / mean(baseline). For a metric where lower is better (bpc, loss) it is inverted,
    mean(baseline) / mean(scores), so that 1 is parity and below 1 is worse in both cases (our convention).

    95 % interval by the percentile bootstrap (scipy.stats.bootstrap; each group resampled on its own, or the seeds
    resampled jointly with paired=True, which needs equal lengths) and, as a cross-check, by the delta method
    (_delta_interval). The bootstrap runs narrow at a handful of seeds: it cannot see more spread than the seeds
    show (in tests/test_stats.py it covers the true ratio ~80 % of the time at 3 seeds, the delta interval ~95 %).
    Intervals are None when either group has fewer than two values; every figure is None when a group is empty or a
    mean is zero.
    """
    x, y = _values(scores), _values(baseline)
    if paired and len(x) != len(y):
        raise ValueError(f"paired needs as many scores as baseline values ({len(x)} vs {len(y)})")
    num, den = (x, y) if higher_is_better else (y, x)
    out = {"ratio": None, "ci_low": None, "ci_high": None, "delta_low": None, "delta_high": None,
           "n": len(x), "n_baseline": len(y), "paired": paired, "method": "percentile bootstrap"}
    if not len(x) or not len(y) or num.mean() == 0 or den.mean() == 0:
        return out
    out["ratio"] = r = float(num.mean() / den.mean())
    if len(x) < 2 or len(y) < 2:
        return out
    res = sps.bootstrap((num, den), _ratio_of_means, n_resamples=N_RESAMPLES, vectorized=True, paired=paired,
                        confidence_level=CONFIDENCE, method="percentile", **_bootstrap_kw(seed))
    lo, hi = res.confidence_interval
    if math.isfinite(lo) and math.isfinite(hi):
        out["ci_low"], out["ci_high"] = float(lo), float(hi)
    out["delta_low"], out["delta_high"] = _delta_interval(num, den, r, paired)
    return out
