"""Config helpers: resolvers, the schema of the top-level keys, and short error messages.

Hydra already reports an unknown group option or a misspelled key in a few lines. What it
cannot see is a wrong *type* inside a `_target_` node; `check_types` compares every value
with the annotation of the parameter it feeds, before anything is built.
"""
from __future__ import annotations

import inspect
from pathlib import Path
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf


CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the config tree every entry point composes


class CogenError(Exception):
    """An error whose message already tells the user what went wrong and what to type instead."""


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda *xs: _product(xs))


def _product(xs):
    out = 1
    for x in xs:
        out *= x
    return out


_register_resolvers()


@dataclass
class RunSchema:
    """Types of the keys every entry config has; the groups themselves are checked by `check_types`."""

    task: str = "train"
    seed: int = 0
    ckpt_path: Optional[str] = None
    resume: Optional[str] = None   # auto: continue the newest unfinished run with the same overrides
    train: bool = True
    test: bool = True
    test_ckpt: str = "best"
    protocol: Optional[str] = None
    tags: list = field(default_factory=list)
    run_id: Optional[str] = None
    skip_completed: bool = False
    objective_metric: Optional[str] = None
    protocols: Any = None   # an experiment's budgets by name; `protocol` picks one
    feedback_from_epoch: Optional[int] = None   # collab=iterative_refinement's first round, set by an
                                                # experiment that sweeps modes which lack that key
    table: Any = None
    model: Any = None
    data: Any = None
    trainer: Any = None
    collab: Any = None
    logger: Any = None
    callbacks: Any = None
    paths: Any = None
    experiment: Any = None
    hparams_search: Any = None
    debug: Any = None
    extras: Any = None


ConfigStore.instance().store(name="run_schema", node=RunSchema)


def _matches(value: Any, annotation: Any) -> bool:
    if annotation in (inspect.Parameter.empty, Any) or value is None or isinstance(annotation, str):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    if origin in (list, tuple) or annotation in (list, tuple):
        return isinstance(value, (list, tuple, ListConfig))
    return True


def check_types(node: Any, path: str = "") -> None:
    """Raise CogenError when a value cannot feed the parameter of its `_target_` it is meant for."""
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            check_types(item, f"{path}[{i}]")
        return
    if not isinstance(node, DictConfig):
        return
    target = node.get("_target_")
    if target is not None:
        try:
            obj = get_object(target)
        except Exception as e:  # noqa: BLE001 - Hydra raises several types here
            raise CogenError(f"{path}._target_: cannot import {target!r} ({e}). Check the spelling of the class path.") from None
        params = _parameters(obj)
        for key in node:
            if str(key).startswith("_"):
                continue
            if params is not None and key not in params and not _takes_kwargs(obj):
                raise CogenError(
                    f"{path}.{key}: {target} has no parameter {key!r}. Valid keys: {', '.join(sorted(params))}."
                )
            value = node._get_node(key)
            if isinstance(value, (DictConfig, ListConfig)):
                check_types(value, f"{path}.{key}")
                continue
            hint = params.get(key) if params else None
            if hint is not None and not _matches(node[key], hint):
                raise CogenError(
                    f"{path}.{key}={node[key]!r}: expected {_hint_name(hint)}, got {type(node[key]).__name__}."
                )
    else:
        for key in node:
            check_types(node._get_node(key), f"{path}.{key}" if path else str(key))


def _parameters(obj) -> dict[str, Any] | None:
    try:
        sig = inspect.signature(obj)
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except (TypeError, ValueError, NameError):
        return None
    return {name: hints.get(name, p.annotation) for name, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _takes_kwargs(obj) -> bool:
    try:
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return True


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def validate(cfg: DictConfig) -> None:
    """Schema check of the top-level keys, then a type check of every `_target_` node."""
    from omegaconf.errors import OmegaConfBaseException

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise CogenError(f"missing required value(s): {', '.join(missing)}. Pass them on the command line, "
                         f"e.g. {missing[0]}=<value>.")
    try:
        OmegaConf.merge(OmegaConf.structured(RunSchema), cfg)
    except OmegaConfBaseException as e:
        raise CogenError(f"{e.full_key}: {str(e).splitlines()[0]}") from None
    if cfg.get("resume") not in (None, "auto"):
        raise CogenError(f"resume={cfg.resume}: the only value is resume=auto (or leave it out).")
    for group in ("data", "model", "trainer", "callbacks", "logger", "collab"):
        if group in cfg and cfg[group] is not None:
            check_types(cfg._get_node(group), group)


def _hydra_cfg():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def run_group() -> str | None:
    """One W&B group per multirun or sweep: `<task>-<sweep id>`; None for a lone run."""
    import os

    from hydra.types import RunMode

    if os.environ.get("WANDB_SWEEP_ID"):
        return f"wandb-sweep-{os.environ['WANDB_SWEEP_ID']}"
    hc = _hydra_cfg()
    if hc is None or hc.mode != RunMode.MULTIRUN:
        return None
    from pathlib import Path

    return f"{hc.job.name}-{Path(hc.sweep.dir).name}"


def run_tags() -> list[str]:
    """The job's own overrides, as W&B tags (W&B caps a tag at 64 characters)."""
    hc = _hydra_cfg()
    return [o[:64] for o in hc.overrides.task] if hc is not None else []


def sqlite_url(path: str) -> str:
    """`sqlite:///<absolute path>` for an Optuna study, creating the folder SQLite will not create."""
    from pathlib import Path

    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


def wandb_offline() -> bool:
    """Offline unless WANDB_MODE=online, or a W&B sweep agent started this run (it must report online)."""
    import os

    default = "online" if os.environ.get("WANDB_SWEEP_ID") else "offline"
    return os.environ.get("WANDB_MODE", default) != "online"


for _name, _fn in {"cogen.run_group": run_group, "cogen.run_tags": run_tags, "cogen.wandb_offline": wandb_offline,
                  "cogen.sqlite": sqlite_url}.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def hydra_choices() -> dict[str, Any]:
    """The group options this run composed, e.g. {'model': 'pacgan2', 'data': 'ring8'}."""
    hc = _hydra_cfg()
    if hc is None:
        return {}
    return {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}


def hydra_overrides() -> list[str]:
    hc = _hydra_cfg()
    return list(hc.overrides.task) if hc is not None else []
