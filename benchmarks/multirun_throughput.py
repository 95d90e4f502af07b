"""Jobs per minute of one multirun of short jobs, by launcher: the basic launcher runs them one
after another in one process; joblib runs `n_jobs` worker processes (each re-imports torch).

    python benchmarks/multirun_throughput.py            # 8 jobs, basic vs joblib n_jobs=2
    python benchmarks/multirun_throughput.py --jobs 4 --batches 50
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = {"basic": [], "joblib n_jobs=2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def multirun(jobs: int, batches: int, launcher: list[str], sweep_dir: Path) -> float:
    """Wall seconds of `cogen-train -m seed=0..jobs-1` with short jobs (CSV logging, no plots)."""
    command = [sys.executable, "-m", "cogen.train", "-m", f"seed=range(0,{jobs})", "logger=csv",
               "trainer.max_epochs=1", f"trainer.limit_train_batches={batches}", "data.num_samples=10000",
               "trainer.enable_progress_bar=false", "callbacks.sample_plot=null", *launcher,
               f"hydra.sweep.dir={sweep_dir}"]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20, help="training iterations per job")
    args = parser.parse_args()
    print(f"| launcher | {args.jobs} jobs, wall s | jobs/minute |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, launcher in LAUNCHERS.items():
            wall = multirun(args.jobs, args.batches, launcher, Path(tmp) / name.split()[0])
            print(f"| {name} | {wall:.1f} | {60 * args.jobs / wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
