"""Framework overhead of cogen's GAN: Lightning (cogen's module + Trainer) against a plain PyTorch loop.

    python benchmarks/gan_overhead.py [--steps N] [--repeats R] [--threads T] [--model gan] [hydra overrides...]

Both sides perform the same updates in the same process: the nets of `cogen.nets.mlp` built
from the composed `conf/train.yaml`, one generator pass, the non-saturating losses, one backward
of d_loss + g_loss, then both Adam steps (simultaneous updates), on batches of `data.batch_size`
packs indexed by `EpochBatchSampler` (epoch 0's order), with noise from a generator seeded by
`seed`. The Lightning side is `cogen.models.gan.GAN` built by `hydra.utils.instantiate` and fit
by the Trainer of `conf/trainer/cpu.yaml` (through `cogen.app.build_trainer`), with no logger,
no callbacks, no progress bar, no validation, no checkpointing. The plain side is written out
by hand below, not through `GAN.training_step`.

What is timed: on each side, the wall time of `--steps` consecutive training iterations, from
the start of iteration `--warmup` to the start of iteration `--warmup + --steps` (in Lightning:
two `on_train_batch_start` hooks, so the window holds whole iterations of the fit loop, data
fetching and hooks included). Trainer construction, `fit`'s start-up and tear-down are outside
the window; they are reported apart as `trainer_startup_s`. Each repeat builds a fresh Trainer
(and the plain side fresh Adam optimizers, as `configure_optimizers` does), and the two sides
alternate (ABBA order) after one untimed warm-up round of each. Because both sides start from
the same seed and do the same updates, their weights must agree at the end; the result
reports whether they do (`same_weights`).

The last line of stdout is one JSON object; the same object is written to
outputs/bench/gan_overhead.json.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

from common import ROOT, compose_train, save_result  # also puts the checkout's src/ on the path

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from torch.func import functional_call  # noqa: E402

from cogen.app import build_trainer  # noqa: E402  (also registers cogen's resolvers and schema)
from cogen.data.mixtures import EpochBatchSampler  # noqa: E402
from cogen.nets.mlp import BatchNormMLP, MaxoutMLP  # noqa: E402

RESULT = ROOT / "outputs" / "bench" / "gan_overhead.json"
TARGET = 1.10

# The Lightning side: cogen's real configs, with everything that is not a training step turned off.
BASE_OVERRIDES = [
    "logger=none",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "++trainer.enable_checkpointing=false",
    "trainer.max_epochs=1",
    "++trainer.limit_val_batches=0",
    "test=false",
]


def compose_cfg(model: str, total_steps: int, out_dir: str, extra: list[str]) -> DictConfig:
    return compose_train([f"model={model}", *BASE_OVERRIDES, f"trainer.limit_train_batches={total_steps}", *extra], out_dir)


# ----------------------------------------------------------------------------- Lightning side
class StepWindow(pl.Callback):
    """Wall time between the start of iteration `start` and the start of iteration `start + n`."""

    def __init__(self, start: int, n: int):
        self.start, self.stop = start, start + n
        self.t0 = self.t1 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.start:
            self.t0 = time.perf_counter()
        elif batch_idx == self.stop:
            self.t1 = time.perf_counter()


class LightningSide:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as cogen.train.run does
        self.datamodule = instantiate(cfg.data)
        self.model = instantiate(cfg.model, _convert_="all")

    def run(self, start: int, n: int) -> tuple[float, float]:
        """(seconds for the n timed steps, seconds of the whole trainer build + fit)."""
        began = time.perf_counter()
        window = StepWindow(start, n)
        trainer = build_trainer(self.cfg, [window])
        trainer.fit(self.model, datamodule=self.datamodule)
        total = time.perf_counter() - began
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if window.t0 is None or window.t1 is None or batches != start + n + 1:
            raise RuntimeError(f"the fit ran {batches} training steps; expected {start + n + 1}")
        return window.t1 - window.t0, total

    def nets(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return self.model.generator, self.model.discriminator


# ----------------------------------------------------------------------------- plain side
class PlainSide:
    """The same updates as GAN.training_step, written directly in PyTorch."""

    def __init__(self, cfg: DictConfig):
        m = cfg.model
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = instantiate(cfg.data)  # the same fixed training set as the Lightning side
        datamodule.setup("fit")
        self.rows = datamodule.train_rows
        self.batch_size, self.data_seed = cfg.data.batch_size, cfg.data.seed
        # Built in the order instantiate builds GAN's arguments, so the seeded weights agree.
        g, d = m.generator, m.discriminator
        self.G = BatchNormMLP(g.in_dim, g.out_dim, hidden=g.hidden, depth=g.depth,
                              **{k: g[k] for k in ("bn_momentum", "init_std") if k in g})
        self.D = MaxoutMLP(d.in_dim, hidden=d.hidden, depth=d.depth, pieces=d.pieces,
                           **{k: d[k] for k in ("init_std",) if k in d})
        self.noise_dim, self.pack = m.noise_dim, m.pack
        self.lr, self.betas = m.lr, tuple(m.betas)
        self.noise = torch.Generator().manual_seed(m.seed)

    def run(self, start: int, n: int) -> tuple[float, float]:
        began = time.perf_counter()
        G, D, pack, noise_dim, gen = self.G, self.D, self.pack, self.noise_dim, self.noise
        opt_d = torch.optim.Adam(D.parameters(), lr=self.lr, betas=self.betas)
        opt_g = torch.optim.Adam(G.parameters(), lr=self.lr, betas=self.betas)
        G.train()
        D.train()
        sampler = EpochBatchSampler(len(self.rows), self.batch_size, self.data_seed)
        sampler.set_epoch(0)
        t0 = t1 = None
        for i, index in enumerate(sampler):
            if i == start:
                t0 = time.perf_counter()
            elif i == start + n:
                t1 = time.perf_counter()
            elif i > start + n:
                break
            real = self.rows[index]
            z = torch.randn(real.shape[0] * pack, noise_dim, generator=gen)
            fake = G(z)
            fake = fake.reshape(-1, pack * fake.shape[1])
            d_real, d_fake = D(real), D(fake.detach())
            frozen = {name: p.detach() for name, p in D.named_parameters()}
            d_fake_for_g = functional_call(D, frozen, (fake,))
            d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            g_loss = F.softplus(-d_fake_for_g).mean()
            opt_d.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            (d_loss + g_loss).backward()
            opt_d.step()
            opt_g.step()
        if t0 is None or t1 is None:
            raise RuntimeError("the training set is too small for --warmup + --steps + 1 batches")
        return t1 - t0, time.perf_counter() - began

    def nets(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return self.G, self.D


# ----------------------------------------------------------------------------- driver
def same_weights(a: tuple[torch.nn.Module, ...], b: tuple[torch.nn.Module, ...]) -> tuple[bool, float]:
    worst, equal = 0.0, True
    for ma, mb in zip(a, b):
        sa, sb = ma.state_dict(), mb.state_dict()
        if sa.keys() != sb.keys():
            return False, float("inf")
        for k in sa:
            x, y = sa[k].float(), sb[k].float()
            equal &= torch.equal(x, y)
            worst = max(worst, float((x - y).abs().max()) if x.numel() else 0.0)
    return equal, worst


def quiet_lightning() -> None:
    warnings.filterwarnings("ignore", module=r"(pytorch_)?lightning.*")
    warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers|smaller than the logging).*")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50, help="timed training steps per repeat (default 50)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats of each side (default 10)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of every repeat (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--model", default="gan", help="model config group option: gan, pacgan2, ... (default gan)")
    p.add_argument("--out", default=str(RESULT), help=f"result JSON (default {RESULT.relative_to(ROOT)})")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for both sides, e.g. trainer.log_every_n_steps=100")
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 1:
        p.error("--steps, --repeats and --warmup must be at least 1")

    began = time.perf_counter()
    quiet_lightning()
    torch.set_num_threads(args.threads)
    total_steps = args.warmup + args.steps + 1
    with tempfile.TemporaryDirectory(prefix="cogen-bench-") as tmp:
        cfg = compose_cfg(args.model, total_steps, tmp, args.overrides)
        if cfg.data.num_samples // cfg.data.batch_size < total_steps:
            p.error(f"one epoch has {cfg.data.num_samples // cfg.data.batch_size} batches; "
                    f"--warmup + --steps + 1 = {total_steps} do not fit")
        sides = {"plain": PlainSide(cfg), "lightning": LightningSide(cfg)}
        for side in sides.values():  # warm-up round, untimed
            side.run(args.warmup, args.steps)
        times: dict[str, list[float]] = {"plain": [], "lightning": []}
        fits: dict[str, list[float]] = {"plain": [], "lightning": []}
        for r in range(args.repeats):
            order = ("plain", "lightning") if r % 4 in (0, 3) else ("lightning", "plain")  # ABBA
            for name in order:
                steps_s, fit_s = sides[name].run(args.warmup, args.steps)
                times[name].append(steps_s)
                fits[name].append(fit_s)
        equal, max_diff = same_weights(sides["plain"].nets(), sides["lightning"].nets())

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    # Per fit, the Lightning time spent outside training steps: Trainer build, fit set-up and tear-down.
    startup = [f - t * total_steps / args.steps for f, t in zip(fits["lightning"], times["lightning"])]
    pair_ratios = [lt / pt for lt, pt in zip(times["lightning"], times["plain"])]
    ratio = med["lightning"] / med["plain"]
    result = {
        "benchmark": "gan_overhead",
        "model": args.model,
        "pack": int(cfg.model.pack),
        "batch_size": int(cfg.data.batch_size),
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "plain_steps_per_s": round(args.steps / med["plain"], 1),
        "lightning_steps_per_s": round(args.steps / med["lightning"], 1),
        "plain_ms_per_step": round(1e3 * med["plain"] / args.steps, 4),
        "lightning_ms_per_step": round(1e3 * med["lightning"] / args.steps, 4),
        "overhead_ms_per_step": round(1e3 * (med["lightning"] - med["plain"]) / args.steps, 4),
        "ratio": round(ratio, 4),
        "ratio_pairwise_median": round(statistics.median(pair_ratios), 4),
        "ratio_pairwise_min": round(min(pair_ratios), 4),
        "ratio_pairwise_max": round(max(pair_ratios), 4),
        "ratio_of_fastest": round(best["lightning"] / best["plain"], 4),
        "target": TARGET,
        "meets_target": ratio <= TARGET,
        "same_weights": equal,
        "max_weight_diff": max_diff,
        # Outside the timed window (median per fit): Trainer build, fit set-up and tear-down.
        "trainer_startup_s": round(statistics.median(startup), 4),
        "wall_s": round(time.perf_counter() - began, 1),
        "overrides": [f"model={args.model}", *BASE_OVERRIDES, f"trainer.limit_train_batches={total_steps}", *args.overrides],
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    report(result, times, args.steps)
    return save_result(result, args.out)


def report(result: dict, times: dict[str, list[float]], steps: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"GAN updates: cogen Lightning vs plain PyTorch "
                        f"(model={result['model']}, batch {result['batch_size']}, {result['threads']} thread(s), "
                        f"{steps} steps x {result['repeats']} repeats)")
    for col in ("loop", "median steps/s", "ms/step", "min..max steps/s", "ratio to plain"):
        table.add_column(col, justify="left" if col == "loop" else "right")
    for name, label in (("plain", "plain PyTorch"), ("lightning", "cogen GAN + Trainer")):
        rates = [steps / t for t in times[name]]
        ratio = 1.0 if name == "plain" else result["ratio"]
        table.add_row(label, f"{result[name + '_steps_per_s']:.1f}", f"{result[name + '_ms_per_step']:.3f}",
                      f"{min(rates):.1f}..{max(rates):.1f}", f"{ratio:.3f}x")
    console = Console(file=sys.stdout, soft_wrap=True)
    console.print(table)
    verdict = "[green]meets[/]" if result["meets_target"] else "[red]misses[/]"
    console.print(f"overhead {result['overhead_ms_per_step']:.3f} ms/step; ratio {result['ratio']:.3f}x {verdict} "
                  f"the {TARGET:.2f}x target (pairwise {result['ratio_pairwise_min']:.3f}..{result['ratio_pairwise_max']:.3f}); "
                  f"same weights after both runs: {result['same_weights']} (max diff {result['max_weight_diff']:.2e}); "
                  f"ratio of the fastest repeats {result['ratio_of_fastest']:.3f}x; "
                  f"Trainer build + fit set-up/tear-down, not timed: {result['trainer_startup_s']:.3f} s per fit")


if __name__ == "__main__":
    main()
