"""The Ray launcher on a local Ray cluster (`hydra/launcher=ray_local`), through the real CLI: the
jobs run in Ray's worker processes, each writes its run folder and summary.json, and a poisoned
job fails alone. Needs the `ray` extra: skipped without it, except under CI, where it must run."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from conftest import cli, compose_train, summary
from test_sweeps import POISONED, TINY, statuses

# Ray's longest socket path is <temp dir>/session_<date>_<time>_<micros>_<pid>/sockets/plasma_store,
# and a Unix socket path holds at most 107 bytes: the temp dir gets what the rest leaves.
RAY_TEMP_DIR_MAX = 107 - len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


@pytest.fixture(autouse=True)
def ray_launcher_installed():
    if find_spec("hydra_plugins.hydra_ray_launcher") is None:
        if os.environ.get("CI"):
            pytest.fail("hydra-ray-launcher is not installed: CI must install the `ray` extra (.[dev,sweeps,ray])")
        pytest.skip("the Ray launcher is not installed: pip install -e '.[ray]'")


def ray_processes(temp_dir: Path) -> list[str]:
    """Command lines of the running processes that belong to the Ray cluster under temp_dir."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(temp_dir) in cmdline:
            found.append(cmdline)
    return found


def test_ray_local_config_one_cpu_per_job_no_dashboard_short_temp_dir():
    import cogen  # noqa: F401  - the run schema and resolvers that conf/train.yaml uses
    from hydra.core.plugins import Plugins

    Plugins.instance()   # the plugins register their configs (hydra/launcher/ray), as the CLI's start does
    ray = compose_train("hydra/launcher=ray_local").hydra.launcher.ray
    assert ray.init.num_cpus is None and ray.remote.num_cpus == 1   # every core, one job per core
    assert ray.init.include_dashboard is False and ray.init.address is None   # a new local cluster
    temp_dir = ray.init._temp_dir
    assert os.path.isabs(temp_dir) and len(temp_dir) <= RAY_TEMP_DIR_MAX


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="looks for leftover Ray processes in /proc")
def test_ray_multirun_runs_the_jobs_in_ray_workers_and_records_the_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")   # no usage report to the Ray project
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))   # short, and this test's own
    try:
        cli("cogen.train", "-m", POISONED, *TINY, "hydra/launcher=ray_local",
            f"hydra.launcher.ray.init._temp_dir={ray_tmp}", f"hydra.sweep.dir={tmp_path}", timeout=300)

        assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["0", "1"]
        assert statuses(tmp_path) == {"0.01": "completed", "nan": "failed"}
        done, failed = summary(tmp_path / "0"), summary(tmp_path / "1")
        assert {"test/modes", "test/hq_pct", "test/reverse_kl", "val/modes"} <= set(done["metrics"])
        assert all(isinstance(done["metrics"][k], float) for k in ("test/modes", "test/hq_pct", "val/modes"))
        assert done["global_step"] > 0 and (tmp_path / "0" / "metrics.csv").is_file()
        assert "nan" in failed["error"] and not failed.get("metrics")

        # The jobs ran in Ray's worker processes: their output is in the worker logs of the
        # session that Ray kept under the given temp dir.
        (session,) = ray_tmp.glob("session_2*")
        logs = "".join(p.read_text(errors="replace") for p in session.glob("logs/worker-*"))
        assert f"done {tmp_path / '0'}" in logs and "became nan" in logs

        # The local cluster ends with the sweep: nothing is left running on the machine.
        deadline = time.monotonic() + 15
        while ray_processes(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ray_processes(ray_tmp) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
