"""stats.py against scipy.stats computed directly, Holm against hand-computed values, and the behaviour that matters:
clearly different groups are told apart, same-distribution groups are not, a retention-ratio interval covers the
true ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from attnbench import stats

A = [0.561, 0.566, 0.559, 0.570, 0.563]
B = [0.552, 0.549, 0.556, 0.551, 0.548, 0.553]


def test_summary_matches_scipy():
    s = stats.summary(A)
    assert s["n"] == 5 and s["mean"] == pytest.approx(np.mean(A)) and s["std"] == pytest.approx(np.std(A, ddof=1))
    ci = sps.ttest_1samp(A, 0.0).confidence_interval(0.95)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((ci.low, ci.high))
    # by hand: mean ± t_{0.975, 4} · sd / sqrt(5), t_{0.975, 4} = 2.776
    half = 2.7764451051977987 * np.std(A, ddof=1) / math.sqrt(5)
    assert s["ci_high"] - s["mean"] == pytest.approx(half)


def test_summary_small_and_degenerate():
    assert stats.summary([0.5]) == {"n": 1, "mean": 0.5, "std": None, "ci_low": None, "ci_high": None}
    assert stats.summary([])["mean"] is None
    s = stats.summary([0.1] * 4)  # identical seeds: zero spread, a point interval, no NaN
    assert (s["std"], s["ci_low"], s["ci_high"]) == (0.0, s["mean"], s["mean"]) and s["mean"] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        stats.summary([0.5, float("nan")])


def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04 -> 3·0.01, 2·0.03, 1·0.04 = 0.03, 0.06, 0.04 -> non-decreasing: 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # m = 4: 0.01·4 = 0.04, 0.04·3 = 0.12, 0.2·2 = 0.4, 0.5·1 = 0.5
    assert stats.holm([0.5, 0.2, 0.01, 0.04]) == pytest.approx([0.5, 0.4, 0.04, 0.12])
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]  # 2·0.6 capped at 1, and 0.7 may not fall below it
    assert stats.holm([0.02]) == [0.02] and stats.holm([]) == []


def test_welch_matches_scipy():
    w = stats.welch(A, B)
    ref = sps.ttest_ind(A, B, equal_var=False)
    assert (w["t"], w["p"]) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert w["diff"] == pytest.approx(np.mean(A) - np.mean(B))
    if hasattr(ref, "confidence_interval"):  # scipy >= 1.11
        ci = ref.confidence_interval(0.95)
        assert (w["ci_low"], w["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
        assert w["df"] == pytest.approx(ref.df)


@pytest.mark.parametrize("a, b", [([0.9998, 0.9995, 0.9996], [1.0, 1.0, 1.0]),  # every seed of one at accuracy 1
                                  ([0.09, 0.7, 0.997], [0.999, 0.998, 0.999]),   # one solved-or-stuck split
                                  ([3.0, 5.0], [1.0, 2.0, 9.0, 4.0])])
def test_welch_by_formula_is_scipys_without_its_warning(a, b):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = sps.ttest_ind(a, b, equal_var=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the report prints no scipy precision warning
        w = stats.welch(a, b)
    assert (w["t"], w["p"]) == (pytest.approx(ref.statistic, rel=1e-6), pytest.approx(ref.pvalue, rel=1e-6))


def test_the_contrast_of_two_groups_is_welchs_test():
    c, ref = stats.contrast([A, B], [1, -1]), sps.ttest_ind(A, B, equal_var=False)
    assert (c["diff"], c["t"], c["p"]) == (pytest.approx(np.mean(A) - np.mean(B)), pytest.approx(ref.statistic),
                                           pytest.approx(ref.pvalue))
    assert (c["ci_low"], c["ci_high"]) == (pytest.approx(stats.welch(A, B)["ci_low"]),
                                           pytest.approx(stats.welch(A, B)["ci_high"]))


def test_factorial_contrasts_of_a_balanced_2x2x2_design_are_the_anova_effects():
    """Eight cells of five values, variances unequal (spreads 0.1 to 0.8): each of the seven factorial effects as a
    contrast (main effects: weights ±1/4, two-way: ±1/2, three-way: ±1) has the t of the effect-coded least-squares
    fit's coefficient (numpy lstsq, pooled residual variance), computed here independently; its
    Welch-Satterthwaite df lies between the smallest cell's n - 1 and the pooled df, 8 x (5 - 1)."""
    rng = np.random.default_rng(3)
    levels = [(c, r, a) for c in (-1, 1) for r in (-1, 1) for a in (-1, 1)]
    cells = [rng.normal(10 + 0.8 * c + 0.3 * r * a, 0.1 + 0.1 * i, size=5) for i, (c, r, a) in enumerate(levels)]
    terms = {"c": (0,), "r": (1,), "a": (2,), "cr": (0, 1), "ca": (0, 2), "ra": (1, 2), "cra": (0, 1, 2)}
    code = {name: [math.prod(lv[j] for j in idx) for lv in levels] for name, idx in terms.items()}
    X = np.array([[1.0, *(code[n][i] for n in terms)] for i in range(8) for _ in range(5)])
    y = np.concatenate(cells)
    beta, rss, *_ = np.linalg.lstsq(X, y, rcond=None)
    se = np.sqrt(rss[0] / (len(y) - X.shape[1]) * np.diag(np.linalg.inv(X.T @ X)))
    for j, (name, idx) in enumerate(terms.items(), start=1):
        scale = {1: 4, 2: 2, 3: 1}[len(idx)]  # a mean difference, a difference of differences, ...
        c = stats.contrast(cells, [v / scale for v in code[name]])
        assert c["t"] == pytest.approx(beta[j] / se[j], rel=1e-9), name
        assert c["diff"] == pytest.approx(8 / scale * beta[j], rel=1e-9), name
        assert 4 <= c["df"] <= 32 and c["p"] == pytest.approx(2 * sps.t.sf(abs(c["t"]), c["df"]))
        assert c["ci_low"] < c["diff"] < c["ci_high"]
    assert stats.contrast(cells, [v / 4 for v in code["c"]])["p"] < 0.001  # the planted main effect is found


def test_contrast_edges():
    assert stats.contrast([A, [], B], [1, 0, -1])["p"] == pytest.approx(stats.welch(A, B)["p"])  # weight 0: unused
    one = stats.contrast([A, [0.5]], [1, -1])
    assert one["diff"] == pytest.approx(np.mean(A) - 0.5) and one["p"] is None  # one run: a figure, no test
    assert stats.contrast([A, []], [1, -1])["diff"] is None
    assert stats.contrast([[1.0, 1.0], [2.0, 2.0]], [1, -1])["p"] is None  # no spread anywhere
    with pytest.raises(ValueError):
        stats.contrast([A, B], [1, -1, 0])


def test_paired_is_the_t_test_of_the_differences_by_hand():
    """One model scored twice per seed: t = mean(d) / (sd(d) / sqrt(n)) with n - 1 degrees of freedom, computed here
    from the formula, not from scipy's ttest_rel; a shift shared by every seed is found where Welch sees nothing."""
    a, b = [0.561, 0.566, 0.557, 0.570], [0.560, 0.5645, 0.5561, 0.5688]
    d = np.subtract(a, b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    r = stats.paired(a, b)
    assert r["n"] == 4 and r["diff"] == pytest.approx(d.mean())
    assert r["t"] == pytest.approx(t) and r["p"] == pytest.approx(2 * sps.t.sf(abs(t), len(d) - 1))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert r["p"] < 0.01 < stats.welch(a, b)["p"]  # the seeds' spread hides the shift from an unpaired test
    assert stats.paired([1.0], [0.5])["p"] is None and stats.paired([1.0, 2.0], [0.5, 1.5])["p"] is None  # no spread
    with pytest.raises(ValueError, match="unequal length"):
        stats.paired([1.0, 2.0], [1.0])


def test_pairwise_tells_different_groups_apart_and_same_ones_not():
    rng = np.random.default_rng(1)
    groups = {"good": list(0.60 + 0.005 * rng.standard_normal(5)),
              "bad": list(0.55 + 0.005 * rng.standard_normal(5)),
              "bad2": list(0.55 + 0.005 * rng.standard_normal(5))}
    rows = {(r["a"], r["b"]): r for r in stats.pairwise(groups, higher_is_better=True)}
    assert set(rows) == {("good", "bad"), ("good", "bad2"), ("bad", "bad2")}
    assert rows[("good", "bad")]["verdict"].startswith("good better than bad (p_holm")
    assert rows[("good", "bad2")]["p_holm"] < 0.05
    same = rows[("bad", "bad2")]
    assert same["verdict"].startswith("cannot be told apart (p_holm=") and same["p_holm"] >= 0.05
    assert stats.holm([r["p"] for r in rows.values()]) == pytest.approx([r["p_holm"] for r in rows.values()])
    # lower is better (bpc): the group with the lower mean wins, whichever side of the pair it is on
    low = {"x": [1.50, 1.51, 1.49], "y": [1.60, 1.61, 1.59]}
    assert stats.pairwise(low, higher_is_better=False)[0]["verdict"].startswith("x better than y")
    assert stats.pairwise(low, higher_is_better=True)[0]["verdict"].startswith("y better than x")


def test_pairwise_too_few_runs_leaves_the_family():
    rows = stats.pairwise({"a": A, "b": B, "single": [0.5]}, higher_is_better=True)
    by = {(r["a"], r["b"]): r for r in rows}
    for pair in (("a", "single"), ("b", "single")):
        assert by[pair]["p"] is None and by[pair]["p_holm"] is None and by[pair]["verdict"] == "too few runs"
    assert by[("a", "b")]["p_holm"] == pytest.approx(by[("a", "b")]["p"])  # a family of one tested pair
    flat = stats.pairwise({"a": [0.5, 0.5], "b": [0.6, 0.6]}, higher_is_better=True)[0]
    assert flat["p"] is None and "not testable" in flat["verdict"]


def test_format_p_and_verdict():
    assert stats.format_p(0.003, "p_holm") == "p_holm=0.003"
    assert stats.format_p(0.41) == "p=0.41" and stats.format_p(0.0004) == "p<0.001"
    assert stats.format_p(0.0496) == "p=0.0496" and stats.format_p(None) == "p n/a"
    assert stats.verdict("a", "b", -0.1, 0.003, higher_is_better=True) == "b better than a (p_holm=0.003)"
    assert stats.verdict("a", "b", 0.1, 0.41, higher_is_better=True) == "cannot be told apart (p_holm=0.41)"


def test_retention_ratio_covers_the_true_ratio():
    rng = np.random.default_rng(0)
    true = 0.50 / 0.60
    hits_boot = hits_delta = 0
    reps = 40
    for k in range(reps):
        x, y = 0.50 + 0.02 * rng.standard_normal(10), 0.60 + 0.02 * rng.standard_normal(10)
        r = stats.retention_ratio(x, y, seed=k)
        assert r["ratio"] == pytest.approx(x.mean() / y.mean())
        assert r["ci_low"] < r["ratio"] < r["ci_high"] and r["delta_low"] < r["ratio"] < r["delta_high"]
        hits_boot += r["ci_low"] <= true <= r["ci_high"]
        hits_delta += r["delta_low"] <= true <= r["delta_high"]
    assert hits_boot >= 0.8 * reps and hits_delta >= 0.8 * reps  # nominal 95 %; the bootstrap runs a bit narrow
    # the two intervals agree roughly on well-behaved data
    assert r["ci_high"] - r["ci_low"] == pytest.approx(r["delta_high"] - r["delta_low"], rel=0.3)


def test_retention_ratio_at_three_seeds_delta_covers_bootstrap_runs_narrow():
    """What the docstring claims: at 3 seeds the t-based delta interval keeps ~95 % coverage, the bootstrap does not."""
    rng = np.random.default_rng(0)
    true, reps, hits_boot, hits_delta = 0.50 / 0.60, 150, 0, 0
    for k in range(reps):
        r = stats.retention_ratio(0.50 + 0.01 * rng.standard_normal(3), 0.60 + 0.01 * rng.standard_normal(3), seed=k)
        hits_boot += r["ci_low"] <= true <= r["ci_high"]
        hits_delta += r["delta_low"] <= true <= r["delta_high"]
    assert hits_delta >= 0.9 * reps and hits_boot <= 0.88 * reps


def test_retention_ratio_direction_pairing_and_small_n():
    r = stats.retention_ratio([1.6, 1.7], [1.5, 1.5], higher_is_better=False)  # bpc: MHA's / ours
    assert r["ratio"] == pytest.approx(1.5 / 1.65) and r["ratio"] < 1
    again = stats.retention_ratio([1.6, 1.7], [1.5, 1.5], higher_is_better=False)
    assert (again["ci_low"], again["ci_high"]) == (r["ci_low"], r["ci_high"])  # seeded: reproducible
    one = stats.retention_ratio([0.5], [0.6, 0.61])
    assert one["ratio"] == pytest.approx(0.5 / 0.605) and one["ci_low"] is None and one["delta_low"] is None
    same = stats.retention_ratio([0.5, 0.5, 0.5], [0.6, 0.6, 0.6])
    assert same["ci_low"] == pytest.approx(0.5 / 0.6) == same["ci_high"]
    # paired seeds that move together: resampling them jointly gives a narrower interval than apart
    rng = np.random.default_rng(3)
    shared = 0.05 * rng.standard_normal(8)
    x, y = 0.5 + shared + 0.002 * rng.standard_normal(8), 0.6 + shared + 0.002 * rng.standard_normal(8)
    p, u = stats.retention_ratio(x, y, paired=True), stats.retention_ratio(x, y, paired=False)
    assert p["ci_high"] - p["ci_low"] < 0.5 * (u["ci_high"] - u["ci_low"])
    assert p["delta_high"] - p["delta_low"] < 0.5 * (u["delta_high"] - u["delta_low"])
    with pytest.raises(ValueError):
        stats.retention_ratio([0.5, 0.6], [0.6], paired=True)
    assert stats.retention_ratio([0.5], [0.0])["ratio"] is None


def _by_enumeration(strata):
    """The exact test's p the slow way: every way to say which runs of each stratum are A's (its successes fixed),
    all equally likely under the null; p sums the probabilities of the A-success totals no likelier than the
    observed one."""
    from collections import Counter
    from itertools import combinations, product

    per = []
    for a, n, b, m in strata:
        units = [1] * (a + b) + [0] * (n + m - a - b)
        per.append([sum(units[i] for i in pick) for pick in combinations(range(n + m), n)])
    totals = Counter(sum(c) for c in product(*per))
    count = sum(totals.values())
    observed = totals[sum(s[0] for s in strata)]
    return sum(v for v in totals.values() if v <= observed) / count


@pytest.mark.parametrize("table", [(3, 3, 1, 3), (0, 3, 3, 3), (2, 5, 4, 4), (1, 4, 1, 3), (5, 6, 0, 2)])
def test_exact_strata_of_one_stratum_is_fishers_exact(table):
    a, n, b, m = table
    got = stats.exact_strata([table])
    assert got["p"] == pytest.approx(sps.fisher_exact([[a, n - a], [b, m - b]]).pvalue)
    assert got["diff"] == pytest.approx(a / n - b / m)


@pytest.mark.parametrize("strata", [
    [(3, 3, 1, 3), (3, 3, 2, 3), (3, 3, 2, 3), (3, 3, 1, 3)],  # one group solves every seed, the other half
    [(3, 3, 0, 3), (3, 3, 3, 3), (3, 3, 2, 3), (3, 3, 0, 3)],  # a stratum where both solve everything adds nothing
    [(2, 3, 1, 3), (0, 2, 1, 3), (1, 3, 3, 3)],                 # mixed directions
])
def test_exact_strata_against_enumeration(strata):
    assert stats.exact_strata(strata)["p"] == pytest.approx(_by_enumeration(strata))


def test_exact_strata_pools_evidence_and_knows_when_nothing_varies():
    one = stats.exact_strata([(3, 3, 0, 3)])["p"]
    four = stats.exact_strata([(3, 3, 0, 3)] * 4)["p"]
    assert one == pytest.approx(0.1) and four < 0.001  # 3 of 3 against 0 of 3 once is no evidence; four times it is
    assert stats.exact_strata([(3, 3, 3, 3), (0, 3, 0, 3)])["p"] is None
    with pytest.raises(ValueError):
        stats.exact_strata([(4, 3, 0, 3)])
