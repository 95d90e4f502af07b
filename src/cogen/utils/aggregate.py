"""What `cogen-table` does to finished runs, with no Hydra and no training: find summary.json
files, group them by an experiment's keys, take mean / std / standard error over seeds, join the
paper's numbers, and write the table as Markdown, CSV and LaTeX. Failed runs are counted and
listed, never fatal. Everything experiment-specific comes from the `table:` node (`TableSpec`)."""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


@dataclass
class Metric:
    key: str                    # the key in summary.json's metrics, e.g. test/modes
    name: str                   # column name; also the `metric` value in the paper file
    fmt: str = ".3g"
    unit: str = ""
    better: str | None = None   # higher | lower: the best of our means is printed bold

    def show(self, mean: float, spread: float | None) -> str:
        text = f"{mean:{self.fmt}}" + (f" ± {spread:{self.fmt}}" if spread is not None else "")
        return text + self.unit


@dataclass
class TableSpec:
    """The `table:` node of an experiment config."""

    group: dict[str, str]                  # column name -> dotted field of summary.json (or overrides.<key>)
    metrics: list[Metric]
    title: str = "results"
    rows: list[str] = field(default_factory=list)
    columns: str | None = None             # one block of metric columns per value of this group key
    labels: dict[str, str] = field(default_factory=dict)
    spread: str = "std"                    # std | sem: what follows ± in our cells
    paper: str | None = None               # the paper file, relative to the experiment folder
    paper_spread: str = "standard error"
    figure: dict[str, str] = field(default_factory=dict)
    curve: dict[str, str] = field(default_factory=dict)   # {x, y: metric keys; series, panels: group keys}

    @classmethod
    def from_dict(cls, node: dict[str, Any]) -> "TableSpec":
        node = dict(node)
        group = node.pop("group")
        group = dict(group) if isinstance(group, dict) else {g.split(".")[-1]: g for g in group}
        metrics = [Metric(**m) for m in node.pop("metrics")]
        rows = node.pop("rows", None)
        columns = node.get("columns")
        rows = [rows] if isinstance(rows, str) else list(rows or [g for g in group if g != columns])
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(node) - known)
        if unknown:
            raise ValueError(f"table: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(group=group, metrics=metrics, rows=rows, **node)

    def label(self, value: Any) -> str:
        return self.labels.get(str(value), str(value))

    def order(self, value: Any) -> int:
        keys = list(self.labels)
        return keys.index(str(value)) if str(value) in keys else len(keys)


# ---------------------------------------------------------------------------------------------
# Runs

@dataclass
class Run:
    dir: Path
    summary: dict
    end: float   # when summary.json was written (its mtime)

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    def field(self, dotted: str) -> Any:
        """A summary field by dotted path; `overrides.<key>` is the run's command-line value of <key>
        (a sweep key such as model.k, which summary.json holds only as an override)."""
        if dotted.startswith("overrides."):
            return self.overrides().get(dotted.removeprefix("overrides."))
        node: Any = self.summary
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def overrides(self) -> dict[str, str]:
        """The run's command-line overrides as {key: value} (`+`/`++`/`~` prefixes dropped)."""
        out = {}
        for item in self.summary.get("overrides") or []:
            key, _, value = str(item).partition("=")
            out[key.lstrip("+~")] = value
        return out

    def value(self, key: str) -> str | None:
        """The value this run took for a sweep key: its override, else its group choice, else the summary field."""
        for v in (self.overrides().get(key), (self.summary.get("choices") or {}).get(key), self.summary.get(key)):
            if v is not None:
                return str(v)
        return None


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every summary.json under the given folders (a run folder or a whole multirun), sorted by path."""
    runs, seen = [], set()
    for root in paths:
        root = Path(root)
        files = [root / "summary.json"] if (root / "summary.json").is_file() else sorted(root.rglob("summary.json"))
        for path in files:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                summary = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                summary = {"status": "failed", "error": f"unreadable summary.json: {e}"}
            runs.append(Run(path.parent, summary, path.stat().st_mtime))
    return runs


def wall_time(runs: list[Run]) -> tuple[float, float]:
    """(elapsed seconds from the first run's start to the last run's end, seconds summed over runs)."""
    timed = [r for r in runs if isinstance(r.summary.get("wall_s"), (int, float))]
    if not timed:
        return 0.0, 0.0
    start = min(r.end - r.summary["wall_s"] for r in timed)
    return max(r.end for r in timed) - start, sum(r.summary["wall_s"] for r in timed)


# ---------------------------------------------------------------------------------------------
# The paper's numbers

def read_paper(path: str | Path, spec: TableSpec) -> tuple[dict[tuple, dict[str, tuple[float, float | None]]], str]:
    """A long-form CSV (one column per group key, then metric, mean, sem[, source]); lines starting
    with # are comments, the first of them names the source. Values may be the paper's names: they
    are mapped back to our keys through the spec's labels. Returns ({group key: {metric: (mean, sem)}}, source)."""
    text = Path(path).read_text()
    comments = [line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")]
    rows = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    back = {v: k for k, v in spec.labels.items()}
    names = {m.name for m in spec.metrics}
    out: dict[tuple, dict[str, tuple[float, float | None]]] = {}
    for row in rows:
        missing = [c for c in (*spec.group, "metric", "mean") if c not in row]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        if row["metric"] not in names:
            raise ValueError(f"{path}: metric {row['metric']!r} is not one of the table's metrics {sorted(names)}")
        key = tuple(back.get(row[g].strip(), row[g].strip()) for g in spec.group)
        sem = (row.get("sem") or "").strip()
        out.setdefault(key, {})[row["metric"]] = (float(row["mean"]), float(sem) if sem else None)
    return out, (comments[0] if comments else "")


# ---------------------------------------------------------------------------------------------
# Aggregation

@dataclass
class Cell:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else (0.0 if self.n == 1 else None)

    @property
    def sem(self) -> float | None:
        return self.std / math.sqrt(self.n) if self.n > 1 else self.std


@dataclass
class Group:
    key: tuple
    completed: list[Run] = field(default_factory=list)
    failed: list[Run] = field(default_factory=list)
    expected: int | None = None
    paper: dict[str, tuple[float, float | None]] = field(default_factory=dict)

    def cell(self, metric: Metric) -> Cell:
        values = [(r.summary.get("metrics") or {}).get(metric.key) for r in self.completed]
        return Cell([float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)])

    @property
    def missing(self) -> int:
        return max(0, self.expected - len(self.completed) - len(self.failed)) if self.expected is not None else 0

    def runs_text(self) -> str:
        if not self.completed and not self.failed and not self.expected:
            return "—"
        notes = [f"{len(self.failed)} failed"] * bool(self.failed) + [f"{self.missing} missing"] * bool(self.missing)
        return f"{len(self.completed)}" + (f" ({', '.join(notes)})" if notes else "")


def aggregate(runs: list[Run], spec: TableSpec, paper: dict[tuple, dict] | None = None,
              expected: dict[tuple, int] | None = None) -> list[Group]:
    """One Group per value of the spec's group keys, ordered as the spec's labels; paper-only groups
    (methods we do not run) are kept with their paper numbers."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        key = tuple(str(run.field(path)) for path in spec.group.values())
        g = groups.setdefault(key, Group(key))
        (g.completed if run.status == "completed" else g.failed).append(run)
    for key, n in (expected or {}).items():
        groups.setdefault(key, Group(key)).expected = n
    for key, numbers in (paper or {}).items():
        groups.setdefault(key, Group(key)).paper = numbers
    first = {k: i for i, k in enumerate(groups)}
    return sorted(groups.values(), key=lambda g: (tuple(spec.order(v) for v in g.key), first[g.key]))


def blocks(groups: list[Group], spec: TableSpec) -> list[tuple[str | None, list[Group]]]:
    if not spec.columns:
        return [(None, groups)]
    i = list(spec.group).index(spec.columns)
    values = list(dict.fromkeys(g.key[i] for g in groups))
    return [(v, [g for g in groups if g.key[i] == v]) for v in values]


def row_values(g: Group, spec: TableSpec) -> list[str]:
    names = list(spec.group)
    return [spec.label(g.key[names.index(r)]) for r in spec.rows]


def _best(groups: list[Group], metric: Metric) -> float | None:
    means = [c.mean for c in (g.cell(metric) for g in groups) if c.n]
    if not means or metric.better not in ("higher", "lower"):
        return None
    return max(means) if metric.better == "higher" else min(means)


def _ours(g: Group, metric: Metric, spec: TableSpec) -> tuple[str, float | None]:
    c = g.cell(metric)
    if not c.n:
        return "—", None
    text = metric.show(c.mean, c.std if spec.spread == "std" else c.sem)
    if c.n < len(g.completed):
        text += f" (n={c.n})"
    return text, c.mean


def _paper(g: Group, metric: Metric) -> str:
    if metric.name not in g.paper:
        return "—"
    mean, sem = g.paper[metric.name]
    return metric.show(mean, sem)


def to_markdown(groups: list[Group], spec: TableSpec, header: list[str]) -> str:
    lines = [f"# {spec.title}", "", *header, ""]
    for block, members in blocks(groups, spec):
        if block is not None:
            lines += [f"## {spec.label(block)}", ""]
        # An experiment without a paper (cogen's own benchmark) has no paper columns.
        cols = [*spec.rows, "runs"] + [c for m in spec.metrics
                                       for c in ((f"{m.name} (ours)", "paper") if spec.paper else (m.name,))]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        best = {m.name: _best(members, m) for m in spec.metrics}
        for g in members:
            cells = [*row_values(g, spec), g.runs_text()]
            for m in spec.metrics:
                text, mean = _ours(g, m, spec)
                cells += [f"**{text}**" if mean is not None and mean == best[m.name] else text]
                cells += [_paper(g, m)] if spec.paper else []
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def to_csv(groups: list[Group], spec: TableSpec) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*spec.group, "metric", "n", "mean", "std", "sem", "paper_mean", "paper_sem", "completed", "failed", "missing"])
    fmt = lambda x: "" if x is None else f"{x:.6g}"
    for g in groups:
        for m in spec.metrics:
            c = g.cell(m)
            pm, ps = g.paper.get(m.name, (None, None))
            w.writerow([*g.key, m.name, c.n, fmt(c.mean), fmt(c.std), fmt(c.sem), fmt(pm), fmt(ps),
                        len(g.completed), len(g.failed), g.missing])
    return buf.getvalue()


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("±", r"$\pm$"), ("—", "--")):
        text = text.replace(a, b)
    return text


def to_tex(groups: list[Group], spec: TableSpec, caption: str = "") -> str:
    """One tabular shaped like a paper's table: a row for our numbers and one for the paper's per group."""
    parts = blocks(groups, spec)
    rows = [k for k in dict.fromkeys(tuple(row_values(g, spec)) for g in groups)]
    ncol = len(spec.metrics)
    out = [r"\begin{table}[t]", r"\centering", r"\small",
           r"\begin{tabular}{" + "l" * (len(spec.rows) + 1) + ("|" + "c" * ncol) * len(parts) + "}", r"\hline"]
    if parts[0][0] is not None:
        out.append(" & " * len(spec.rows) + " & ".join(rf"\multicolumn{{{ncol}}}{{c}}{{{_tex(spec.label(b))}}}" for b, _ in parts) + r" \\")
    out.append(" & ".join([*map(_tex, spec.rows), ""] + [_tex(m.name) for _ in parts for m in spec.metrics]) + r" \\ \hline")
    for row in rows:
        ours, paper = [*map(_tex, row), "ours"], ["" for _ in row] + ["paper"]
        for _, members in parts:
            g = next((g for g in members if tuple(row_values(g, spec)) == row), None)
            for m in spec.metrics:
                ours.append(_tex(_ours(g, m, spec)[0]) if g else "--")
                paper.append(_tex(_paper(g, m)) if g else "--")
        out += [" & ".join(ours) + r" \\", " & ".join(paper) + r" \\ \hline"] if spec.paper else [" & ".join(ours) + r" \\ \hline"]
    out += [r"\end{tabular}", rf"\caption{{{_tex(caption)}}}" if caption else "", r"\end{table}", ""]
    return "\n".join(line for line in out if line)
