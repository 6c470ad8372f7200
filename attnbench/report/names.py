"""Every metric and config name the report reads, declared here and nowhere else (the RCMHA paper section's own
are paper.py's), and the figures that must be numbers (NUMERIC)."""

from __future__ import annotations

from attnbench.record_groups import DEVICE_KEY
from attnbench.report.paper import PAPER_ACC

# ---------------------------------------------------------------------------------------------- metric names
# The producers' names (bench.py: speed/memory, train.py: train, params.py: params), in one place.
SPEED_TIME, SPEED_P25, SPEED_P75 = "median_ms", "p25_ms", "p75_ms"
SPEED_COLUMNS = ("median_ms", "p25_ms", "p75_ms", "min_ms", "mean_ms", "tokens_per_s", "core_tflops",
                 "module_tflops", "pct_of_ceiling")
SPEED_RATIO = "ratio_to_mha"  # the producer's own ratio, measured within its run
# The plotted peak, first present: allocator peak of fwd+bwd (CUDA), of the forward alone (mode fwd), growth of the
# resident memory of a fresh process (CPU). All exclude inputs and weights (benchmarking.md, "Memory").
MEMORY_PEAKS = ("peak_alloc_mib", "peak_fwd_mib", "cpu_peak_rss_delta_mib")
MEMORY_COLUMNS = ("peak_alloc_mib", "peak_fwd_mib", "activations_mib", "reserved_mib", "nvml_peak_mib",
                  "nvml_avg_mib", "cpu_peak_rss_mib", "cpu_peak_rss_delta_mib", "estimate_mib", "inputs_mib",
                  "weights_mib")
TRAIN_COLUMNS = ("test_acc", "heldout_acc", "test_exact", "test_loss", "test_bpc", "val_loss_best", "val_acc_best",
                 "params", "steps", "tokens_per_s", "wall_s", "alloc_peak_mib", "nvml_avg_mib")
TRAIN_ACC = "test_acc"
CURVES = "curves"  # extra key of a train record: [{step, seconds, train_loss, val_loss, val_acc}, ...]
CURVE_X = (("step", "step"), ("seconds", "wall-clock seconds"))
CURVE_Y = (("val_loss", "validation loss"), ("val_acc", "validation accuracy"))
PARAMS_COLUMNS = None  # params records: every metric they carry is shown
# Seed statistics (stats.py) of multi-seed train runs: metric and whether higher is better.
STATS_METRICS = (("test_acc", True), ("test_exact", True), ("test_bpc", False))
ATTN_PARAMS = "attn_params"  # attention-only parameter count, shown beside the retention ratio where records carry it
BASELINE = "mha"  # retention ratios are an attention's score over this one's (MHE paper)
RATIO = f"x {BASELINE.upper()}"
RATIO_BOOT, RATIO_DELTA = f"{RATIO} CI (bootstrap)", f"{RATIO} CI (delta)"
PARAMS_SHARE = f"{ATTN_PARAMS} {RATIO}"  # the attention parameters over the baseline's: what the retention ratio costs
# Length extrapolation (train --eval-ctx): metrics[EVAL_CTX] = [{ctx, loss, bpc, acc, n} | {ctx, status, reason}]
EVAL_CTX, EVAL_CTX_ACC, EVAL_CTX_LOSS = "eval_ctx", "acc", "loss"
REASON_CHARS = 48  # an n/a cell keeps the reason's first clause, about this long
WIDTH = "d_model"  # a width sweep (Zoology, arXiv 2312.04927, Figure 2): series differing in this setting only,
TASK_FIXED = ("ctx", "eval_stride")  # a synthetic task's sequence length is both (sources.py)
LR = "lr"  # a learning-rate sweep: Zoology runs four per point and plots each architecture at its best (Figure 2)
SELECT_BY = "val_acc_best"  # what picks that best: validation accuracy, never the test figures it then reports
WIDTH_DERIVED = {"d_ff": 4}  # and in these when derived from it (TrainConfig.resolved: d_ff 0 -> 4 d_model)
SOLVED_AT = 0.9  # a seed of a width sweep solves its task at this test accuracy or above (issue 20's mark for MHA;
# in Zoology's Figure 2, arXiv 2312.04927, attention sits near 1.0 and the failures near the chance plateau)

# The figures the report reads as numbers, per record kind. One that holds anything else (a string such as "high",
# NaN, inf) reads NA in its cell, its column stays, and a note names it by file:line (bad_values).
NA = "n/a"
NUMERIC = {"speed": (*SPEED_COLUMNS, SPEED_RATIO), "memory": MEMORY_COLUMNS,
           "train": (*TRAIN_COLUMNS, "nvml_peak_mib", ATTN_PARAMS, PAPER_ACC)}

# Config keys (bench.py, train.py) that place a record on an axis or say where it ran, not which series it is in.
# DEVICE_KEY, SEED, PRESET, TRAIN_FIELDS and TRAIN_IGNORE (train records) live in record_groups.py.
SEQ_LEN, NAME = "seq_len", "name"
PLOT_KEYS = ("mode", "dtype", "batch", "d_model", "heads")  # one plot per device group and these settings
# attn_config is absent from failed cells; causality is the check's own record (its seconds), not a setting
BENCH_IGNORE = (SEQ_LEN, DEVICE_KEY, NAME, "attn_config", "causal", "causality")

# The metrics --compare sets side by side, per record kind (side_by_side.py).
COMPARE_METRICS = {"speed": (SPEED_TIME,), "memory": MEMORY_PEAKS,
                   "train": ("test_acc", "test_loss"), "params": ("total",)}  # params.py: qkv + out + other
