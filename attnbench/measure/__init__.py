"""Measurement primitives (benchmarking.md): timing, memory at three levels, NVML sampling, FLOP conventions.

Library code only: every function returns data; the CLI prints.
"""
