"""Paired timing for benchmarks/perf.py: ratios that a busy machine cannot fake.

A ratio A / B is measured over `pairs` interleaved rounds A B B A; each round gives one ratio
(tA1 + tA2) / (tB1 + tB2), so a slow spell of the machine hits both sides of a round alike. The row reports
the median of the per-round ratios and its spread (half the interquartile range, relative to the median). A
verdict is printed only when the whole interquartile range lies on one side of the target; otherwise the row
says it is too noisy to judge.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

MIN_PAIRS = 20


@dataclass
class Paired:
    a: list[float]  # seconds per call of A, one entry per round (mean of its two runs)
    b: list[float]
    ratios: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def quartiles(self) -> tuple[float, float]:
        q = statistics.quantiles(self.ratios, n=4, method="inclusive")
        return q[0], q[2]

    @property
    def spread(self) -> float:
        lo, hi = self.quartiles()
        return (hi - lo) / 2 / self.ratio if self.ratio else float("inf")

    def verdict(self, target: str) -> str:
        """'pass', 'FAIL' or 'too noisy to judge' for a target such as '<= 0.6' ('-': no target)."""
        if not target.startswith(("<=", ">=")):
            return "-"
        bound = float(target[2:])
        lo, hi = self.quartiles()
        if target.startswith("<="):
            return "pass" if hi <= bound else ("FAIL" if lo > bound else "too noisy to judge")
        return "pass" if lo >= bound else ("FAIL" if hi < bound else "too noisy to judge")


def _clock(fn: Callable[[], object], inner: int, between: Callable[[], object] | None) -> float:
    total = 0.0
    for _ in range(inner):
        if between is not None:
            between()
        start = time.perf_counter()
        fn()
        total += time.perf_counter() - start
    return total / inner


def paired(
    fa: Callable[[], object],
    fb: Callable[[], object],
    pairs: int = MIN_PAIRS,
    inner: int = 1,
    after_a: Callable[[], object] | None = None,
    after_b: Callable[[], object] | None = None,
) -> Paired:
    """Time A and B in `pairs` rounds A B B A (`inner` calls each); `after_a` / `after_b` run untimed after
    every call (to undo what the call did, e.g. remove a loaded delta)."""

    def run_a() -> float:
        t = _clock(fa, 1, None)
        if after_a is not None:
            after_a()
        return t

    def run_b() -> float:
        t = _clock(fb, 1, None)
        if after_b is not None:
            after_b()
        return t

    run_a(), run_b()  # warm-up
    a, b, ratios = [], [], []
    for _ in range(max(pairs, MIN_PAIRS)):
        ta1 = sum(run_a() for _ in range(inner))
        tb1 = sum(run_b() for _ in range(inner))
        tb2 = sum(run_b() for _ in range(inner))
        ta2 = sum(run_a() for _ in range(inner))
        a.append((ta1 + ta2) / 2 / inner)
        b.append((tb1 + tb2) / 2 / inner)
        ratios.append((ta1 + ta2) / (tb1 + tb2))
    return Paired(a, b, ratios)


def ms(xs: list[float]) -> str:
    return f"{1000 * statistics.median(xs):.3g} ms"


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []

    def add(self, row: str, measured: str, ratio_name: str, ratio: float | str, target: str) -> None:
        """A row measured otherwise (one-shot sizes, memory peaks, subprocess rows)."""
        r = f"{ratio:.3f}" if isinstance(ratio, float) else ratio
        verdict = "-"
        if isinstance(ratio, float) and target[:2] in ("<=", ">=", "=="):
            bound = float(target[2:])
            ok = {"<=": ratio <= bound, ">=": ratio >= bound, "==": ratio == bound}[target[:2]]
            verdict = "pass" if ok else "FAIL"
        self._put(row, measured, ratio_name, r, "-", target, verdict)

    def add_paired(self, row: str, names: tuple[str, str], p: Paired, ratio_name: str, target: str) -> None:
        measured = f"{names[0]} {ms(p.a)}, {names[1]} {ms(p.b)}; {len(p.ratios)} ABBA pairs"
        self._put(row, measured, ratio_name, f"{p.ratio:.3f}", f"±{100 * p.spread:.1f}%", target, p.verdict(target))

    def _put(self, row, measured, ratio_name, r, spread, target, verdict) -> None:
        self.rows.append((row, ratio_name, r, spread, target, verdict, measured))
        print(f"  {row:<26} {ratio_name:<36} {r:>8} {spread:>7}  {target:<8} {verdict:<18} | {measured}", flush=True)

    def markdown(self) -> str:
        lines = [
            "| row | ratio | value (median of pairs) | spread | target | verdict | measured |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)
