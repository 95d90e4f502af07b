"""Read a W&B group's runs for the table builder: `cogen-table runs=wandb:<entity>/<project>/<group>`.

Every cogen run attaches its summary.json to its W&B run (`run_files.write_summary`). Once the
runs are synced (`wandb sync <run dir>/wandb/offline-run-*`, or online runs), this downloads each
run's summary.json into a local folder, one subfolder per run id, and the table is built from
there as from any multirun folder. A run that died before writing one is kept as failed, with
its W&B state as the reason.
"""
from __future__ import annotations

import json
from pathlib import Path

PREFIX = "wandb:"


class WandbGroupError(Exception):
    pass


def parse(spec: str) -> tuple[str, str]:
    """'wandb:entity/project/group' -> ('entity/project', 'group')."""
    parts = spec.removeprefix(PREFIX).strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise WandbGroupError(f"runs={spec}: write runs=wandb:<entity>/<project>/<group> "
                              "(the group is printed by every cogen multirun, e.g. train-<sweep dir name>).")
    return f"{parts[0]}/{parts[1]}", parts[2]


def download(spec: str, into: Path) -> Path:
    """Fetch the group's summary.json files into `into`/<run id>/; returns `into`."""
    project, group = parse(spec)
    try:
        import wandb

        runs = list(wandb.Api(timeout=30).runs(project, filters={"group": group}))
    except Exception as e:  # no login, no network, no such project: one line, not the client's traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WandbGroupError(f"runs={spec}: could not list the group on W&B ({first}). Log in (wandb login) and "
                              "sync the runs first, or pass the run folders: runs=[outputs/<task>/<sweep>].") from None
    if not runs:
        raise WandbGroupError(f"runs={spec}: W&B has no runs in group {group!r} of {project}.")
    for run in runs:
        folder = into / run.id
        folder.mkdir(parents=True, exist_ok=True)
        names = {f.name for f in run.files()}
        if "summary.json" in names:
            run.file("summary.json").download(root=str(folder), replace=True)
        else:
            (folder / "summary.json").write_text(json.dumps({
                "status": "failed", "run_id": run.id, "error": f"no summary.json on W&B (run state: {run.state})"}))
    return into
