"""The suite and the package's declarations (issue 14): the README's test command ends with pytest's summary line,
no test bounds a wall-clock time, and every third-party module the package needs is a declared dependency."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = sorted((ROOT / "tests").rglob("test_*.py"))


@pytest.mark.parametrize("extra", [[], ["-q"]], ids=["readme", "landing"])
def test_the_test_command_ends_with_the_summary_line(tmp_path, extra):
    """`python -m pytest` (README) and `python -m pytest -q` under the project's pytest settings: with a second -q
    (one in addopts, one on the command line) pytest printed no summary line at all."""
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                        str(tmp_path), "-p", "no:cacheprovider", *extra, str(tmp_path / "test_one.py")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"\b1 passed in [\d.]+s", p.stdout.strip().splitlines()[-1]), p.stdout


_CLOCKS = {"perf_counter", "time", "monotonic", "perf_counter_ns", "monotonic_ns", "time_ns"}


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _own_nodes(node: ast.AST):
    """`node` and what it contains, without descending into nested functions and lambdas (their own scopes)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, _SCOPES):
            yield from _own_nodes(child)


def _reads_clock(node: ast.AST, clocked: set[str]) -> bool:
    for n in _own_nodes(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _CLOCKS \
                and isinstance(n.func.value, ast.Name) and n.func.value.id == "time":
            return True
        if isinstance(n, ast.Name) and n.id in clocked:
            return True
    return False


def wall_clock_asserts(source: str) -> list[int]:
    """Lines of `assert` statements that put an upper bound on a wall-clock reading (time.perf_counter() and the
    like, directly or through a variable of the same function assigned from one)."""
    tree = ast.parse(source)
    lines = []
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
        mine = [n for stmt in scope.body if not isinstance(stmt, _SCOPES) for n in _own_nodes(stmt)]
        clocked: set[str] = set()
        for _ in range(3):  # t0 = time.perf_counter(); elapsed = time.perf_counter() - t0; ...
            for n in mine:
                if isinstance(n, ast.Assign) and _reads_clock(n.value, clocked):
                    clocked |= {t.id for t in n.targets if isinstance(t, ast.Name)}
        for n in (n for n in mine if isinstance(n, ast.Assert)):
            for cmp in (c for c in _own_nodes(n.test) if isinstance(c, ast.Compare)):
                sides = [cmp.left, *cmp.comparators]
                for op, (a, b) in zip(cmp.ops, zip(sides, sides[1:])):
                    upper = b if isinstance(op, (ast.Gt, ast.GtE)) else a if isinstance(op, (ast.Lt, ast.LtE)) \
                        else None
                    if upper is not None and _reads_clock(upper, clocked):
                        lines.append(n.lineno)
    return sorted(set(lines))


def test_the_detector_finds_a_wall_clock_bound():
    bad = "import time\nt0 = time.perf_counter()\nrun()\nelapsed = time.perf_counter() - t0\nassert elapsed < 120\n"
    assert wall_clock_asserts(bad) == [5]
    assert wall_clock_asserts("import time\nassert 60 > time.monotonic() - t0\n") == [2]
    assert wall_clock_asserts("t = measure()\nassert t.median_ms >= 2.0\n") == []  # a measured value, not a clock
    # a clock variable of another function does not make this function's `t` a clock
    two = "def f():\n    t = time.time()\n\ndef g():\n    t = run()\n    assert t.a <= 1\n"
    assert wall_clock_asserts(two) == []


@pytest.mark.parametrize("path", TESTS, ids=[str(p.relative_to(ROOT / "tests")) for p in TESTS])
def test_no_test_bounds_a_wall_clock_time(path):
    """A timing bound fails whenever the machine is busy; timings belong in benchmarks."""
    assert wall_clock_asserts(path.read_text(encoding="utf-8")) == []


# import name -> distribution, where they differ; None: optional, imported lazily behind a fallback
_DISTRIBUTION = {"pynvml": "nvidia-ml-py", "triton": None}


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in reqs}

    return names(project["dependencies"]), {k: names(v) for k, v in project.get("optional-dependencies", {}).items()}


def test_every_third_party_import_is_declared():
    deps, extras = _declared()
    found = set()
    for path in (ROOT / "attnbench").rglob("*.py"):
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(n, ast.Import):
                found |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                found.add(n.module.split(".")[0])
    third_party = {m for m in found if m not in sys.stdlib_module_names and m != "attnbench"}
    optional = set().union(*extras.values())
    missing = {m for m in third_party
               if _DISTRIBUTION.get(m, m) is not None and _DISTRIBUTION.get(m, m) not in deps | optional}
    assert not missing, f"imported by attnbench but not declared in pyproject.toml: {sorted(missing)}"


def test_numpy_is_a_dependency_not_an_extra():
    """distributed.broadcast (torch.distributed.broadcast_object_list) turns the received bytes back into an object
    through Tensor.numpy(): without numpy every torchrun run failed ("Numpy is not available") and every command
    printed "Failed to initialize NumPy". It came only with the `plot` extra (matplotlib)."""
    deps, _ = _declared()
    assert "numpy" in deps
