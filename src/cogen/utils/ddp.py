"""Lightning DDP inside Hydra runs and multiruns.

Lightning relaunches ranks > 0 with the parent's argv plus `hydra.run.dir`. Under a multirun
that argv holds `-m` and the sweep lists, so the child starts a sweep of its own (measured in
shared/HYDRA-LIGHTNING-NOTES.md). Here the child is started as a *single* run of the same
config with this job's own overrides, in this job's output folder.
"""
from __future__ import annotations

import sys
from typing import Sequence


def hydra_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    import __main__
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    hc = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    config_dir = next(s.path for s in hc.runtime.config_sources if s.provider == "main")
    command += ["--config-path", config_dir, "--config-name", hc.job.config_name, *hc.overrides.task]
    command += [f'hydra.run.dir="{hc.runtime.output_dir}"', f"hydra.job.name={hc.job.name}_ddp_process_{local_rank}",
                "hydra.output_subdir=null"]
    return command, get_original_cwd()


def install() -> None:
    """Point both of Lightning's launchers at `hydra_subprocess_cmd`."""
    import lightning_fabric.strategies.launchers.subprocess_script as fabric_launcher
    import pytorch_lightning.strategies.launchers.subprocess_script as pl_launcher

    fabric_launcher._hydra_subprocess_cmd = hydra_subprocess_cmd
    pl_launcher._hydra_subprocess_cmd = hydra_subprocess_cmd
