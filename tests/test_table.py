"""The table builder on hand-made run folders (known values, a failed run, a null metric), the
selection of one protocol's runs, the paper file, and one real end-to-end `cogen-table` launch."""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from cogen.table import build, compose_experiment
from cogen.utils.aggregate import TableSpec, find_runs, read_paper
from conftest import ROOT, cli

MODES = {("gan", "ring8"): [5.0, 6.0, 8.0], ("pacgan2", "ring8"): [8.0, 7.0], ("gan", "grid25"): [20.0, 22.0, 21.0]}


def write_run(folder: Path, model: str, data: str, seed: int, modes: float | None = None, status: str = "completed",
              protocol: str = "short", extra: list[str] = (), reverse_kl: float | None = 0.5) -> Path:
    """A run folder as cogen-train (or cogen.ensemble) leaves it: just its summary.json."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {} if status != "completed" else {"test/modes": modes, "test/hq_pct": 90.0 + seed, "test/reverse_kl": reverse_kl}
    summary = {"status": status, "task": "pacgan_2d", "seed": seed, "protocol": protocol,
               "choices": {"model": model, "data": data, "experiment": "pacgan_2d"},
               "overrides": [f"model={model}", f"data={data}", f"seed={seed}", "experiment=pacgan_2d",
                             f"protocol={protocol}", *extra],
               "metrics": metrics, "wall_s": 10.0, **({"error": "loss became nan"} if status == "failed" else {})}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    for (model, data), values in MODES.items():
        for seed, v in enumerate(values):
            write_run(root / f"data={data},model={model},seed={seed}", model, data, seed, v,
                      reverse_kl=None if (model, seed) == ("pacgan2", 1) else 0.1 * (seed + 1))
    write_run(root / "data=ring8,model=pacgan2,seed=2", "pacgan2", "ring8", 2, status="failed")
    return root


def table_rows(out: Path) -> dict[tuple, dict]:
    return {(r["method"], r["data"], r["metric"]): r for r in csv.DictReader((out / "table.csv").open())}


def test_known_means_stds_failure_and_all_formats(runs, tmp_path):
    out = tmp_path / "table"
    assert build(["experiment=pacgan_2d", f"runs=[{runs}]", f"out={out}"]) == 0
    rows = table_rows(out)
    for (model, data), values in MODES.items():
        row = rows[(model, data, "modes")]
        assert int(row["n"]) == len(values)
        assert float(row["mean"]) == pytest.approx(statistics.fmean(values), rel=1e-5)
        assert float(row["std"]) == pytest.approx(statistics.stdev(values), rel=1e-5)
    assert rows[("pacgan2", "ring8", "modes")]["failed"] == "1"
    assert rows[("pacgan2", "ring8", "reverse KL")]["n"] == "1"          # a null metric is left out, not zero
    assert rows[("gan", "ring8", "modes")]["paper_mean"] == "6.3"          # joined through the labels
    assert rows[("ali", "ring8", "modes")]["n"] == "0"                     # paper-only row kept

    md = (out / "table.md").read_text()
    assert "**protocol=short**" in md and "NOT the paper's budget" in md
    assert "| PacGAN2 | 2 (1 failed) | **7.5 ± 0.7** | 7.9 ± 0.1 |" in md
    assert "FAILED method=pacgan2 data=ring8 seed=2: loss became nan" in md
    assert "| GAN | 3 | 6.3 ± 1.5 | 6.3 ± 0.5 |" in md
    assert "(n=1)" in md
    tex = (out / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"7.5 $\pm$ 0.7" in tex and r"98.2 $\pm$ 0.2\%" in tex
    assert (out / "metrics.png").stat().st_size > 0 and (out / "samples.png").is_file()


def test_a_protocol_dir_keeps_only_its_own_jobs_and_counts_missing_ones(tmp_path):
    out = tmp_path / "short"
    write_run(out / "a", "gan", "ring8", 0, 6.0)
    write_run(out / "b", "gan", "ring8", 1, 8.0)
    write_run(out / "c", "gan", "ring8", 5, 100.0)                                  # seed outside seeds=2
    write_run(out / "d", "gan", "ring8", 0, 100.0, protocol="paper")                # other protocol
    write_run(out / "e", "gan", "ring8", 0, 100.0, extra=["model.lr=0.5"])          # other configuration
    assert build(["experiment=pacgan_2d", "protocol=short", "seeds=2", "run=false", f"out={out}"]) == 0
    rows = table_rows(out)
    assert float(rows[("gan", "ring8", "modes")]["mean"]) == 7.0
    assert rows[("pacgan4", "grid25", "modes")]["missing"] == "2"                   # 4 methods x 2 data x 2 seeds expected
    assert "14 missing" in (out / "table.md").read_text()


def test_paper_file_parses_with_source_and_every_cell():
    cfg = compose_experiment("pacgan_2d", "short", [])
    from omegaconf import OmegaConf

    spec = TableSpec.from_dict(OmegaConf.to_container(cfg.table, resolve=True))
    paper, source = read_paper(ROOT / "experiments/pacgan_2d/paper.csv", spec)
    assert "NeurIPS 2018" in source and "Table 1" in source
    assert len(paper) == 10 and all(len(v) == 3 for v in paper.values())        # 5 methods x 2 data, 3 metrics
    assert paper[("pacgan2", "ring8")]["modes"] == (7.9, 0.1)
    assert paper[("gan", "grid25")]["high quality"] == (94.8, 0.7)
    assert paper[("ali", "grid25")]["reverse KL"] == (0.14, 0.03)


def test_protocols_are_side_by_side_and_paper_is_the_papers_budget():
    paper = compose_experiment("pacgan_2d", "paper", [])
    short = compose_experiment("pacgan_2d", "short", [])
    assert (paper.trainer.max_epochs, paper.data.num_samples, paper.data.batch_size) == (400, 100000, 100)
    assert paper.model.lr == 1e-4 and list(paper.model.betas) == [0.8, 0.999] and paper.protocols.paper.seeds == 10
    assert paper.test_ckpt == "last" and short.protocol == "short" and short.protocols.short.seeds >= 3


def test_unreadable_or_missing_runs_give_a_short_error(tmp_path):
    proc = cli("cogen.table", "experiment=pacgan_2d", f"runs=[{tmp_path}]", check=False)
    assert proc.returncode == 1 and "no finished runs" in proc.stdout and "Traceback" not in proc.stderr
    proc = cli("cogen.table", "experiment=nope", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_cogen_table_runs_the_multirun_then_reuses_it(tmp_path):
    args = ["experiment=pacgan_2d", "protocol=short", "seeds=1", "jobs=2", "model=gan,pacgan2", "data=ring8",
            "data.num_samples=500", "trainer.max_epochs=1", f"out={tmp_path}"]
    cli("cogen.table", *args)
    first = {r.dir.name: r.summary["run_id"] for r in find_runs([tmp_path])}
    assert sorted(first) == ["data=ring8,model=gan,seed=0", "data=ring8,model=pacgan2,seed=0"]
    assert (tmp_path / "table.md").is_file() and (tmp_path / "samples.png").is_file()
    proc = cli("cogen.table", *args)
    assert "reusing completed run" in proc.stderr
    assert {r.dir.name: r.summary["run_id"] for r in find_runs([tmp_path])} == first


def test_a_curve_of_one_metric_against_another(tmp_path):
    """experiment=collab_modes plots goal against answers spent: one line per mode and noise, one panel per family."""
    root = tmp_path / "sweep"
    for family in ("vae", "dcgan"):
        for budget, goal in ((0, 0.1), (192, 0.2), (640, 0.3)):
            for seed in (0, 1):
                folder = root / f"{family}-{budget}-{seed}"
                folder.mkdir(parents=True)
                (folder / "summary.json").write_text(json.dumps({
                    "status": "completed", "task": "collab_modes", "seed": seed, "protocol": "short",
                    "choices": {"model": family, "collab": "iterative_refinement"},
                    "overrides": [f"model={family}", "collab=iterative_refinement", "collab.partner.noise=0.0",
                                  f"collab.partner.budget={budget}", f"seed={seed}"],
                    "metrics": {"test/goal": goal + 0.02 * seed, "test/answers": float(budget)}}))
    out = tmp_path / "table"
    assert build(["experiment=collab_modes", f"runs=[{root}]", f"out={out}"]) == 0
    rows = {(r["family"], r["budget"], r["metric"]): r for r in csv.DictReader((out / "table.csv").open())}
    assert float(rows[("vae", "640", "goal (share of wanted digit)")]["mean"]) == pytest.approx(0.31)
    assert float(rows[("dcgan", "192", "answers spent")]["mean"]) == 192
    assert (out / "curve.png").stat().st_size > 0


def test_a_wandb_group_without_a_server_is_a_short_error(tmp_path, monkeypatch):
    """runs=wandb:<entity>/<project>/<group> reads the group from the W&B server; here there is none
    (no login, no network), and the builder says what to do in one line."""
    from cogen.utils.wandb_group import WandbGroupError

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))   # no stored login
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    with pytest.raises(WandbGroupError, match=r"could not list the group on W&B .*wandb login"):
        build(["experiment=pacgan_2d", "runs=wandb:me/cogen/train-sweep", f"out={tmp_path / 'out'}"])
    with pytest.raises(WandbGroupError, match="write runs=wandb:<entity>/<project>/<group>"):
        build(["experiment=pacgan_2d", "runs=wandb:cogen-only", f"out={tmp_path / 'out'}"])


def test_required_experiments_are_built_first_with_the_same_protocol_seeds_and_jobs(monkeypatch):
    """knowledge_fusion's `table.requires` names knowledge_fusion_kge: its multirun (the KG
    embeddings fusion=embedding reads) is launched before the fusion runs, over only the graphs the
    fusion table asks for, and a loop is refused. (The launcher is replaced by a recorder: what is
    tested is which multirun the builder asks for first.)"""
    import cogen.table as table

    launched = []

    def record(name, protocol, out, sweep, forwarded, jobs):
        launched.append({"name": name, "protocol": protocol, "jobs": jobs, "sweep": sweep, "forwarded": forwarded})
        raise table.TableError("stop after the first launch")

    monkeypatch.setattr(table, "launch", record)
    with pytest.raises(table.TableError, match="stop after the first launch"):
        build(["experiment=knowledge_fusion", "seeds=1", "jobs=2", "trainer.max_epochs=1"])
    first = launched.pop()
    assert (first["name"], first["protocol"], first["jobs"], first["forwarded"]) == ("knowledge_fusion_kge", "short", 2, [])
    assert first["sweep"]["seed"] == ["0"] and len(first["sweep"]["data/graph"]) == 5   # the LM's own overrides stay its own
    with pytest.raises(table.TableError, match="stop after the first launch"):
        build(["experiment=knowledge_fusion", "seeds=1", "data/graph=nations,umls"])
    assert launched.pop()["sweep"]["data/graph"] == ["nations", "umls"]   # no other graph's embeddings are trained
    with pytest.raises(table.TableError, match="table.requires loops: a -> knowledge_fusion_kge -> a"):
        table.build_required(["a"], {"seeds": None, "jobs": None}, "short", ("a", "knowledge_fusion_kge"))


@pytest.mark.slow
def test_a_missing_reference_is_pre_trained_once_before_the_sweep(tmp_path, monkeypatch):
    """kl_frontier's `table.prepare` names the reference its runs read: from an empty artifacts
    folder the builder pre-trains it (a real cogen-train run, ~40 s) before it launches the sweep,
    and reuses it the next time; a step that fails is one line naming its command."""
    import cogen.table as table

    reference = tmp_path / "artifacts" / "lm" / "tiny_gpt2_markov" / "config.json"
    seen = []

    def record(name, protocol, out, sweep, forwarded, jobs):
        seen.append(reference.exists())
        raise table.TableError("stop at the launch")

    monkeypatch.setattr(table, "launch", record)
    monkeypatch.chdir(tmp_path)   # the pre-training run's own folder lands under tmp_path/outputs
    argv = ["experiment=kl_frontier", "seeds=1", f"paths.artifacts_dir={tmp_path / 'artifacts'}"]
    with pytest.raises(table.TableError, match="stop at the launch"):
        build(argv)
    assert seen == [True] and (reference.parent / "model.safetensors").is_file()
    made = reference.stat().st_mtime_ns
    with pytest.raises(table.TableError, match="stop at the launch"):
        build(argv)
    assert seen == [True, True] and reference.stat().st_mtime_ns == made   # not trained again

    missing = tmp_path / "never" / "config.json"
    with pytest.raises(table.TableError, match=r"preparing .*never/config.json failed \(cogen-train model=no_such_model: "
                                               r"exit code 1, no file\)"):
        table.prepare([{"creates": str(missing), "train": ["model=no_such_model"]}], [])
