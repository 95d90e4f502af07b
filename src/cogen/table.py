"""`cogen-table experiment=<name> [protocol=short|paper] [seeds=N|[0,1]] [jobs=2] [run=false] [runs=[dir,...]]
[out=dir] [any train override]`: one table builder for every experiment.

1. Composes conf/train.yaml with `experiment=<name>` (Hydra compose API) and reads its `table:` node.
2. Runs what is not run yet: the experiment's multirun as a real `python -m cogen.train -m` subprocess, with
   `skip_completed=true`, a stable sweep dir (outputs/<task>/<protocol>) and one folder per job named
   after its overrides, so finished jobs are reused; `jobs>1` uses Hydra's joblib launcher.
   Experiments named in `table.requires` get their own tables built first, the same way, and the
   files named in `table.prepare` (a pre-trained reference, say) are made first where missing.
3. Reads the finished runs (their summary.json), groups and aggregates them (cogen.utils.aggregate),
   and writes table.md / table.csv / table.tex, samples.png (one final scatter per group) and
   metrics.png into the output folder; prints the Markdown.

With `runs=[dir1,dir2]` nothing is launched: the table is built from those folders (run or multirun
folders, searched for summary.json). With `runs=wandb:<entity>/<project>/<group>` the runs of a W&B
group (synced or online) are read from the server: each run's summary.json is downloaded first. Extra `key=value` arguments go to every training job; they also
name the sweep dir (outputs/<task>/<protocol>+<overrides>), so differently configured runs never mix.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console

from cogen.config import CONF_DIR
from cogen.utils import wandb_group
from cogen.utils.aggregate import (Group, Metric, Run, TableSpec, aggregate, blocks, find_runs, read_paper, row_values, to_csv,
                                   to_markdown, to_tex, wall_time)

ROOT = Path(__file__).resolve().parents[2]
OWN_KEYS = ("experiment", "protocol", "skip_completed")   # set by the builder; not part of a job's folder name
OPTIONS = {"experiment": None, "protocol": None, "seeds": None, "runs": None, "out": None, "jobs": None, "run": "true"}
console = Console(soft_wrap=True)


class TableError(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    opts, forwarded = dict(OPTIONS), []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise TableError(f"expected key=value, got {arg!r}. Usage: cogen-table experiment=<name> [protocol=short] [seeds=3]")
        (opts.__setitem__(key, value) if key in OPTIONS else forwarded.append(arg))
    if not opts["experiment"]:
        names = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        raise TableError(f"experiment=<name> is required; experiments: {', '.join(names) or 'none'}")
    return opts, forwarded


def _items(text: str) -> list[str]:
    return [x.strip() for x in text.strip().strip("[]").split(",") if x.strip()]


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).is_sweep_override()


def compose_experiment(name: str, protocol: str | None, overrides: list[str]):
    import cogen.config  # noqa: F401 - registers the run schema and resolvers
    from hydra import compose, initialize_config_dir

    extra = [f"protocol={protocol}"] if protocol else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={name}", *extra, *overrides], return_hydra_config=True)
    if not cfg.get("table"):
        raise TableError(f"experiment {name!r} has no `table:` node; add one (see experiments/pacgan_2d/config.yaml)")
    return cfg


def experiment_dir(name: str) -> Path:
    """The folder of the experiment's config file (a symlinked config points into experiments/<name>/)."""
    conf = (CONF_DIR / "experiment" / f"{name}.yaml").resolve()
    own = ROOT / "experiments" / name
    return conf.parent if conf.parent.name == name or not own.is_dir() else own


def sweep_values(cfg, forwarded: list[str], seeds: str | None) -> dict[str, list[str]]:
    """{sweep key: the values this table covers}: the experiment's `hydra.sweeper.params`, with
    command-line sweeps (and `seeds=`) taking precedence."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True) or {}
    params = {k: str(v) for k, v in params.items()}
    for item in forwarded:
        key, _, value = item.partition("=")
        if key in params:
            params[key] = value
    if seeds is not None:
        params["seed"] = f"range(0,{seeds})" if seeds.isdigit() else ",".join(_items(seeds))
    parser = OverridesParser.create()
    out = {}
    for key, value in params.items():
        o = parser.parse_override(f"{key}={value}")
        out[key] = [str(v) for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.get_value_element_as_str()]
    return out


def train_command() -> list[str]:
    """`python -m cogen.train` with this interpreter: the same entry point as `cogen-train`."""
    return [sys.executable, "-m", "cogen.train"]


def launch(name: str, protocol: str | None, out: Path, sweep: dict[str, list[str]], forwarded: list[str], jobs: int) -> int:
    extra_keys = [k.partition("=")[0].lstrip("+~") for k in forwarded]
    exclude = ",".join(dict.fromkeys([*OWN_KEYS, *(k for k in extra_keys if k not in sweep)]))
    cmd = [*train_command(), "-m", f"experiment={name}", *([f"protocol={protocol}"] if protocol else []),
           "skip_completed=true", *(f"{k}={','.join(v)}" for k, v in sweep.items()),
           *(f for f in forwarded if f.partition("=")[0].lstrip("+~") not in sweep),
           f"hydra.sweep.dir='{out}'", "hydra.sweep.subdir=${hydra:job.override_dirname}",
           f"hydra.job.config.override_dirname.exclude_keys=[{exclude}]"]
    if jobs > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
           "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", threads)}
    console.print("running " + " ".join(cmd), markup=False, highlight=False)
    return subprocess.run(cmd, env=env, cwd=os.getcwd()).returncode


def select(runs: list[Run], task: str, protocol: str | None, sweep: dict[str, list[str]], forwarded: list[str]) -> list[Run]:
    """The runs that belong to this table: same task and protocol, sweep values inside the covered
    ones, and exactly the same extra overrides. A job seen twice keeps its latest completed run."""
    extra = {f.lstrip("+~") for f in forwarded if f.partition("=")[0].lstrip("+~") not in sweep}
    picked: dict[tuple, Run] = {}
    for r in runs:
        if r.summary.get("task") not in (None, task) or (protocol and r.summary.get("protocol") not in (None, protocol)):
            continue
        if any(r.value(k) not in values for k, values in sweep.items()):
            continue
        own = {f"{k}={v}" for k, v in r.overrides().items() if k not in sweep and k not in OWN_KEYS}
        if own != extra:
            continue
        job = tuple(r.value(k) for k in sweep)
        old = picked.get(job)
        if old is None or (r.status == "completed", r.end) > (old.status == "completed", old.end):
            picked[job] = r
    return list(picked.values())


def expected_counts(spec: TableSpec, sweep: dict[str, list[str]]) -> dict[tuple, int] | None:
    """How many jobs each group should hold, when every group field is a sweep key."""
    keys = [p.split(".", 1)[1] if p.startswith(("choices.", "overrides.")) else p for p in spec.group.values()]
    if not sweep or any(k not in sweep for k in keys):
        return None
    counts: dict[tuple, int] = {}
    names = list(sweep)
    for combo in itertools.product(*sweep.values()):
        job = dict(zip(names, combo))
        key = tuple(job[k] for k in keys)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _duration(s: float) -> str:
    m, s = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def header_lines(cfg, spec: TableSpec, protocol: str | None, groups: list[Group], runs: list[Run], out: Path,
                 source: str) -> list[str]:
    label = OmegaConf.select(cfg, f"protocols.{protocol}.label") if protocol else None
    protocols = sorted({str(r.summary.get("protocol")) for r in runs})
    seeds = sorted({r.summary.get("seed") for r in runs if r.status == "completed"}, key=lambda s: (str(type(s)), s))
    done = [r for r in runs if r.status == "completed"]
    elapsed, summed = wall_time(runs)
    lines = [f"**protocol={protocol or ','.join(protocols)}**" + (f": {label}" if label else ""),
             "",
             f"- ours: mean ± {spec.spread} over seeds {', '.join(map(str, seeds)) or '—'} (runs column: completed per row)"
             + (f"; paper: mean ± {spec.paper_spread}" + (f" ({source})" if source else "") if spec.paper else ""),
             f"- {len(done)} completed, {len(runs) - len(done)} failed, {sum(g.missing for g in groups)} missing;"
             f" wall time {_duration(elapsed)} from the first start to the last finish,"
             f" {_duration(summed)} summed over runs; runs in `{out}`"]
    if len(protocols) > 1:
        lines.append(f"- WARNING: these runs mix protocols {', '.join(protocols)}")
    return lines


def failure_lines(groups: list[Group], spec: TableSpec) -> list[str]:
    lines = []
    for g in groups:
        for r in g.failed:
            where = " ".join(f"{name}={value}" for name, value in zip(spec.group, g.key))
            lines.append(f"- FAILED {where} seed={r.summary.get('seed')}: {r.summary.get('error', 'no error recorded')} (`{r.dir}`)")
    return (["## Failed runs", "", *lines, ""]) if lines else []


def write_figures(groups: list[Group], spec: TableSpec, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = list(spec.group)
    fig_spec = spec.figure or {}
    row_key = fig_spec.get("rows", spec.columns or names[-1])
    col_key = fig_spec.get("cols", spec.rows[0] if spec.rows else names[0])
    image = fig_spec.get("image", "samples/final.png")
    ran = [g for g in groups if g.completed]
    if ran and row_key in names and col_key in names:
        ri, ci = names.index(row_key), names.index(col_key)
        rows = sorted({g.key[ri] for g in ran}, key=lambda v: (spec.order(v), v))
        cols = sorted({g.key[ci] for g in ran}, key=lambda v: (spec.order(v), v))
        fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.6 * len(cols), 2.6 * len(rows)), squeeze=False)
        for (i, rv), (j, cv) in itertools.product(enumerate(rows), enumerate(cols)):
            ax = axes[i][j]
            ax.set_xticks([]), ax.set_yticks([])
            members = [r for g in ran if g.key[ri] == rv and g.key[ci] == cv for r in g.completed]
            first = min(members, key=lambda r: (str(r.summary.get("seed")), str(r.dir)), default=None)
            path = first.dir / image if first else None
            if path and path.is_file():
                ax.imshow(plt.imread(path))
                ax.set_xlabel(f"seed {first.summary.get('seed')}", fontsize=7)
            else:
                ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes)
            if i == 0:
                ax.set_title(spec.label(cv))
            if j == 0:
                ax.set_ylabel(spec.label(rv))
        fig.tight_layout()
        written.append(out / "samples.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    written += _bar_plot(groups, spec, out, plt)
    if spec.curve:
        written.append(_curve_plot(groups, spec, out, plt))
    return written


def _curve_plot(groups: list[Group], spec: TableSpec, out: Path, plt) -> Path:
    """curve.png: metric y against metric x (each group's mean over seeds, std as error bars), one
    line per value of the `series` group key(s), one panel per value of `panels` (e.g. quality per
    feedback answer spent, one line per mode, one panel per model family). `ref_x`/`ref_y` add one
    reference point per panel (e.g. the exact optimum; a number is a fixed coordinate), labelled `ref_label`."""
    c, names = spec.curve, list(spec.group)
    x, y = Metric(key=c["x"], name=c["x"]), Metric(key=c["y"], name=c["y"])
    series_keys = [c["series"]] if isinstance(c.get("series"), str) else list(c.get("series") or [])
    panel_of = (lambda g: g.key[names.index(c["panels"])]) if c.get("panels") else (lambda g: None)
    series_of = lambda g: tuple(g.key[names.index(k)] for k in series_keys)   # noqa: E731
    ran = [g for g in groups if g.completed]
    panels = sorted({panel_of(g) for g in ran}, key=lambda v: (spec.order(v), str(v)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        members = [g for g in ran if panel_of(g) == panel]
        for series in sorted({series_of(g) for g in members}, key=lambda v: [(spec.order(p), str(p)) for p in v]):
            points = sorted((g.cell(x).mean, g.cell(y).mean, g.cell(y).std or 0) for g in members
                            if series_of(g) == series and g.cell(x).n and g.cell(y).n)
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                        capsize=2, label=", ".join(f"{k} {spec.label(v)}" for k, v in zip(series_keys, series)) or None)
        if c.get("ref_x") is not None and c.get("ref_y") is not None:   # e.g. the exact optimum each run reports
            refs = [(_ref_value(g, c["ref_x"]), _ref_value(g, c["ref_y"])) for g in members]
            refs = [r for r in refs if None not in r]
            if refs:
                ax.plot(sum(r[0] for r in refs) / len(refs), sum(r[1] for r in refs) / len(refs), "o", mfc="none",
                        mec="k", ms=12, label=c.get("ref_label", "reference"))
        ax.set_title(f"{c['panels']} {spec.label(panel)}" if panel is not None else spec.title, fontsize=9)
        ax.set_xlabel(c.get("x_label", c["x"]))
        ax.set_ylabel(c.get("y_label", c["y"]))
        if series_keys or c.get("ref_x") is not None:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ref_value(group: Group, ref) -> float | None:
    """A curve's reference coordinate: a number as given (e.g. KL 0 of the reference policy), or
    the group's mean of the metric it names."""
    if isinstance(ref, (int, float)):
        return float(ref)
    cell = group.cell(Metric(key=ref, name=ref))
    return cell.mean if cell.n else None


def _bar_plot(groups: list[Group], spec: TableSpec, out: Path, plt) -> list[Path]:
    parts = blocks(groups, spec)
    fig, axes = plt.subplots(len(spec.metrics), len(parts), figsize=(3.2 * len(parts) + 1, 2.4 * len(spec.metrics)), squeeze=False)
    for (i, m), (j, (block, members)) in itertools.product(enumerate(spec.metrics), enumerate(parts)):
        ax = axes[i][j]
        labels = [" ".join(row_values(g, spec)) for g in members]
        cells = [g.cell(m) for g in members]
        paper = [g.paper.get(m.name, (float("nan"), None)) for g in members]
        x = range(len(members))
        ax.bar([k - 0.2 for k in x], [c.mean if c.n else 0 for c in cells], 0.4, label="ours",
               yerr=[(c.std or 0) if c.n else 0 for c in cells], capsize=2)
        ax.bar([k + 0.2 for k in x], [p[0] for p in paper], 0.4, label="paper", yerr=[p[1] or 0 for p in paper],
               capsize=2, alpha=0.6)
        ax.set_xticks(list(x), labels, rotation=30, fontsize=7)
        ax.set_title(f"{spec.label(block)} {m.name}" if block is not None else m.name, fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "metrics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def prepare(steps: list[dict], forwarded: list[str]) -> None:
    """What every run of the experiment reads and none of them makes (`table.prepare`, e.g. the
    pre-trained reference an RL sweep starts from): each step's `train` overrides go once through
    cogen-train when its `creates` path is missing, with the table's own `paths.*` overrides, so the
    file lands where the runs look for it."""
    paths = [f for f in forwarded if f.lstrip("+~").startswith("paths.")]
    for step in steps:
        target = Path(step["creates"])
        if target.exists():
            continue
        cmd = [*train_command(), *step["train"], *paths]
        console.print(f"{target} is missing; making it first: " + " ".join(cmd), markup=False, highlight=False)
        code = subprocess.run(cmd, cwd=os.getcwd()).returncode
        if code or not target.exists():
            raise TableError(f"preparing {target} failed (cogen-train {' '.join(step['train'])}: exit code {code}, "
                             f"{'file made' if target.exists() else 'no file'}); fix that run, then run the same command again.")


def build_required(names: list[str], opts: dict, protocol: str | None, chain: tuple[str, ...],
                   sweep: dict[str, list[str]] | None = None) -> None:
    """The tables of the experiments this one needs (`table.requires`, e.g. the KG embeddings a fusion
    reads), built first through the same builder (finished jobs reused), with the same protocol,
    seeds and jobs. Where a required experiment sweeps a key this one sweeps too (data/graph), it
    covers only this one's values, so `data/graph=nations` trains no other graph's embeddings; the
    experiment's other overrides are its own and are not passed on."""
    for required in names:
        if required in chain:
            raise TableError(f"table.requires loops: {' -> '.join([*chain, required])}; remove one of them.")
        argv = [f"experiment={required}", *(f"{k}={opts[k]}" for k in ("seeds", "jobs") if opts[k])]
        code = build(argv + ([f"protocol={protocol}"] if protocol else []), chain=chain, narrow=sweep)
        if code:
            raise TableError(f"required experiment {required!r} did not finish (exit code {code}); "
                             f"run the same command again, finished jobs are reused.")


def build(argv: list[str], chain: tuple[str, ...] = (), narrow: dict[str, list[str]] | None = None) -> int:
    opts, forwarded = parse_args(argv)
    name, protocol = opts["experiment"], opts["protocol"]
    cfg = compose_experiment(name, protocol, [f for f in forwarded if not _is_sweep(f)])
    protocol = protocol or cfg.get("protocol")
    table = OmegaConf.to_container(cfg.table, resolve=True)
    requires = table.pop("requires", None) or []   # the builder's, not the aggregation's
    requires = [requires] if isinstance(requires, str) else list(requires)
    steps = table.pop("prepare", None) or []
    spec = TableSpec.from_dict(table)
    sweep = sweep_values(cfg, forwarded, opts["seeds"])
    for key, values in (narrow or {}).items():   # a requiring table's values of a key both sweep
        if key in sweep and key != "seed":
            sweep[key] = [v for v in sweep[key] if v in values] or sweep[key]
    extras = [f for f in forwarded if f.partition("=")[0].lstrip("+~") not in sweep]
    tag = "+".join([protocol or "default", *sorted(e.replace("/", "_") for e in extras)])
    out = Path(opts["out"] or Path(cfg.paths.log_dir) / cfg.task / tag).resolve()
    status = 0
    if opts["runs"] and opts["runs"].startswith(wandb_group.PREFIX):   # a W&B group, read from the server
        _, group = wandb_group.parse(opts["runs"])
        out = Path(opts["out"] or Path(cfg.paths.log_dir) / cfg.task / f"wandb-{group}").resolve()
        runs = find_runs([wandb_group.download(opts["runs"], out / "runs")])
        sweep, expected = {}, None
        found = {r.summary.get("protocol") for r in runs}
        protocol = opts["protocol"] or (found.pop() if len(found) == 1 else None)
    elif opts["runs"]:
        runs = find_runs(Path(p) for p in _items(opts["runs"]))
        sweep, expected = {}, None
        out = Path(opts["out"]).resolve() if opts["out"] else Path(os.path.commonpath([r.dir.resolve() for r in runs] or ["."]))
        found = {r.summary.get("protocol") for r in runs}
        protocol = opts["protocol"] or (found.pop() if len(found) == 1 else None)
    else:
        if opts["run"].lower() not in ("false", "0", "no"):
            prepare(steps, forwarded)
            build_required(requires, opts, protocol, (*chain, name), sweep)
            jobs = int(opts["jobs"] or min(2, os.cpu_count() or 1))
            started = time.perf_counter()
            status = launch(name, protocol, out, sweep, forwarded, jobs)
            console.print(f"[bold]multirun finished[/] in {_duration(time.perf_counter() - started)} (exit code {status})")
            if status:
                console.print("[yellow]the multirun stopped early; the table below holds what finished. Run the same "
                              "command again to continue: completed jobs are reused.[/]")
        runs = select(find_runs([out]) if out.is_dir() else [], cfg.task, protocol, sweep, forwarded)
        expected = expected_counts(spec, sweep)
    if not runs:
        raise TableError(f"no finished runs found in {out}")
    paper, source = ({}, "")
    if spec.paper:
        paper_path = experiment_dir(name) / spec.paper
        paper, source = read_paper(paper_path, spec) if paper_path.is_file() else ({}, f"paper file {paper_path} not found")
    groups = aggregate(runs, spec, paper, expected)
    md = to_markdown(groups, spec, header_lines(cfg, spec, protocol, groups, runs, out, source)) + "\n".join(
        failure_lines(groups, spec))
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(md)
    (out / "table.csv").write_text(to_csv(groups, spec))
    (out / "table.tex").write_text(to_tex(groups, spec, caption=f"{spec.title} (protocol={protocol})"))
    figures = write_figures(groups, spec, out)
    if console.is_terminal:
        from rich.markdown import Markdown

        console.print(Markdown(md))
    else:
        print(md, flush=True)
    console.print(f"wrote {out / 'table.md'}, table.csv, table.tex, " + ", ".join(p.name for p in figures), highlight=False)
    return 1 if status else 0


def main(argv: list[str] | None = None) -> None:
    try:
        code = build(sys.argv[1:] if argv is None else argv)
    except (TableError, wandb_group.WandbGroupError, ValueError, FileNotFoundError) as e:
        console.print(f"[bold red]cogen-table error:[/] {e}")
        code = 1
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors come in several types
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if not isinstance(e, (HydraException, OmegaConfBaseException)):
            raise
        console.print(f"[bold red]cogen-table error:[/] {str(e).splitlines()[0]}")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
