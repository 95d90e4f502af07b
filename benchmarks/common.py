"""What every benchmark script shares: cogen's config composed as `cogen-train` composes it, and
the result written as JSON (the file, and its last stdout line, which scripts and CI read)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a plain checkout works too; an installed cogen is the same code


def compose_train(overrides: list[str], out_dir: str):
    """conf/train.yaml with `overrides`, without the hydra node, writing into `out_dir`, validated."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from cogen.config import CONF_DIR, validate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    cfg = OmegaConf.masked_copy(full, [k for k in full if k != "hydra"])
    with open_dict(cfg):
        cfg.paths.output_dir = out_dir
    validate(cfg)
    return cfg


def save_result(result: dict, out: str | Path) -> dict:
    """The result as indented JSON in `out`, and as one JSON line on stdout."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return result
