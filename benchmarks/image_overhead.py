"""Framework overhead of cogen's image models: Lightning (cogen's module + Trainer) against a
plain PyTorch loop doing the same updates, for the VAE and the DCGAN.

    python benchmarks/image_overhead.py [--cases vae-digits,dcgan-fashion] [--device cpu|cuda]
        [--steps N] [--repeats R] [--warmup W] [--threads T] [--batch-size B] [--fashion-root DIR]
        [hydra overrides...]

Cases (each a composed `conf/train.yaml`, validation, logging, callbacks and checkpoints off):
  vae-digits      model=vae (MLP, Bernoulli) on digits, batch 50 (data.binarize: fresh draws each batch)
  vae-fashion     model=vae on Fashion-MNIST, batch 100
  dcgan-digits    model=dcgan on digits, batch 50
  dcgan-fashion   model=dcgan on Fashion-MNIST, batch 256 (the lead's images/s figure)

Both sides start from the same weights (the nets are instantiated from the same config after
the same `seed_everything`) and read the same batches (one shared data module, a fresh training
loader per repeat, epoch 0's order). The Lightning side is the module from `instantiate` fit by
`cogen.app.build_trainer`; the plain side is the training step written out by hand below, not
through the module. Before every repeat both sides reseed the global RNG (the VAE draws its
reparameterisation noise from it); the GAN's noise comes from a generator seeded by
`model.seed` that each side keeps across repeats, as the module does.

What is timed, per side and repeat: `--steps` consecutive iterations after `--warmup` untimed
ones (in Lightning between two `on_train_batch_start` hooks: data fetching and hooks
included; on CUDA both ends synchronise). Trainer build and fit start-up are outside the window.
The sides alternate (ABBA) after an untimed warm-up round. After the last repeat the weights of
the two sides are compared (`same_weights`, `max_weight_diff`): on CPU they are bit-identical;
on CUDA some kernels (cuDNN's convolution gradients) sum in a varying order, and a GAN grows
those last-bit differences, unless `--deterministic` asks for deterministic kernels.

The last line of stdout is one JSON object (all cases); the same is written to
outputs/bench/image_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # benchmarks/, for common and gan_overhead

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from torch.func import functional_call  # noqa: E402

from cogen.app import build_trainer  # noqa: E402
from common import ROOT, save_result  # noqa: E402
from gan_overhead import compose_cfg, quiet_lightning  # noqa: E402

RESULT = ROOT / "outputs" / "bench" / "image_overhead.json"
FASHION = "/usr/share/datasets/fashion-mnist"


@dataclass
class Case:
    overrides: list[str]
    cpu_steps: int  # default timed steps on CPU (digits has 25 batches an epoch: steps + warmup + 1 must fit)
    cpu_repeats: int
    cuda_steps: int = 100
    cuda_repeats: int = 5


CASES = {
    "vae-digits": Case(["model=vae", "data=digits"], 20, 10, 20, 10),
    "vae-fashion": Case(["model=vae", "data=fashion_mnist"], 50, 6),
    "dcgan-digits": Case(["model=dcgan", "data=digits", "model.metrics=null"], 20, 6, 20, 10),
    "dcgan-fashion": Case(["model=dcgan", "data=fashion_mnist", "data.batch_size=256", "model.metrics=null"], 4, 3),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def nets(cfg: DictConfig) -> dict[str, torch.nn.Module]:
    """The model's nets, built in the order `instantiate(cfg.model)` builds them (same weights)."""
    return {k: instantiate(v) for k, v in cfg.model.items() if isinstance(v, DictConfig) and "_target_" in v
            and k != "metrics"}


# ----------------------------------------------------------------------------- Lightning side
class StepWindow(pl.Callback):
    def __init__(self, start: int, n: int, device: torch.device):
        self.start, self.stop, self.device = start, start + n, device
        self.t0 = self.t1 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx in (self.start, self.stop):
            sync(self.device)
            if batch_idx == self.start:
                self.t0 = time.perf_counter()
            else:
                self.t1 = time.perf_counter()


class LightningSide:
    def __init__(self, cfg: DictConfig, datamodule, device: torch.device):
        self.cfg, self.datamodule, self.device = cfg, datamodule, device
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        self.model = instantiate(cfg.model, _convert_="all")

    def run(self, start: int, n: int) -> float:
        torch.manual_seed(self.cfg.seed)
        window = StepWindow(start, n, self.device)
        trainer = build_trainer(self.cfg, [window])
        trainer.fit(self.model, datamodule=self.datamodule)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if window.t0 is None or window.t1 is None or done != start + n + 1:
            raise RuntimeError(f"the fit ran {done} training steps; expected {start + n + 1}")
        return window.t1 - window.t0

    def nets(self) -> tuple[torch.nn.Module, ...]:
        m = self.model
        return (m.generator, m.discriminator) if hasattr(m, "generator") else (m.encoder, m.decoder, m.likelihood)


# ----------------------------------------------------------------------------- plain side
class PlainSide:
    """The same updates as the module's training_step, written directly in PyTorch."""

    def __init__(self, cfg: DictConfig, datamodule, device: torch.device):
        self.cfg, self.datamodule, self.device, m = cfg, datamodule, device, cfg.model
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        self.parts = {k: v.to(device) for k, v in nets(cfg).items()}
        self.gan = "generator" in self.parts
        self.lr, self.betas = m.lr, tuple(m.betas)
        if self.gan:
            self.pack, self.noise_dim = m.pack, m.noise_dim
            self.noise = torch.Generator().manual_seed(m.seed)
        else:
            self.k, self.beta, self.adam_eps = m.k, m.beta, m.adam_eps
            if m.objective != "elbo":
                raise SystemExit("the plain VAE loop writes out the ELBO objective only (model.objective=elbo)")

    def optimizers(self) -> list[torch.optim.Optimizer]:
        if self.gan:
            return [torch.optim.Adam(self.parts[k].parameters(), lr=self.lr, betas=self.betas)
                    for k in ("discriminator", "generator")]
        params = [p for k in ("encoder", "decoder", "likelihood") for p in self.parts[k].parameters()]
        return [torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.adam_eps)]

    def gan_step(self, x: torch.Tensor, opts) -> None:
        G, D, pack = self.parts["generator"], self.parts["discriminator"], self.pack
        real = x.reshape(-1, pack * x.shape[1], *x.shape[2:])
        z = torch.randn(x.shape[0], self.noise_dim, generator=self.noise).to(real)
        fake = G(z)
        fake = fake.reshape(-1, pack * fake.shape[1], *fake.shape[2:])
        d_real, d_fake = D(real), D(fake.detach())
        frozen = {name: p.detach() for name, p in D.named_parameters()}
        d_fake_for_g = functional_call(D, frozen, (fake,))
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        g_loss = F.softplus(-d_fake_for_g).mean()
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        (d_loss + g_loss).backward()
        for opt in opts:
            opt.step()

    def vae_step(self, x: torch.Tensor, opts) -> None:
        enc, dec, lik = self.parts["encoder"], self.parts["decoder"], self.parts["likelihood"]
        mu, logvar = enc(x)
        eps = torch.randn((self.k, *mu.shape), device=mu.device, dtype=mu.dtype)
        z = mu + (0.5 * logvar).exp() * eps
        recon = -lik.log_prob(dec(z), x).mean(0)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
        loss = -(-recon - self.beta * kl).mean()
        opts[0].zero_grad(set_to_none=True)
        loss.backward()
        opts[0].step()

    def run(self, start: int, n: int) -> float:
        torch.manual_seed(self.cfg.seed)
        opts = self.optimizers()
        for net in self.parts.values():
            net.train()
        loader = self.datamodule.train_dataloader()
        loader.sampler.set_epoch(0)
        step = self.gan_step if self.gan else self.vae_step
        t0 = t1 = None
        for i, (x, _) in enumerate(loader):
            if i in (start, start + n):
                sync(self.device)
                t0, t1 = (time.perf_counter(), None) if i == start else (t0, time.perf_counter())
            elif i > start + n:
                break
            step(x.to(self.device, non_blocking=True), opts)
        if t0 is None or t1 is None:
            raise RuntimeError("an epoch is too short for --warmup + --steps + 1 batches")
        return t1 - t0

    def nets(self) -> tuple[torch.nn.Module, ...]:
        keys = ("generator", "discriminator") if self.gan else ("encoder", "decoder", "likelihood")
        return tuple(self.parts[k] for k in keys)


# ----------------------------------------------------------------------------- driver
def same_weights(a: tuple[torch.nn.Module, ...], b: tuple[torch.nn.Module, ...]) -> tuple[bool, float]:
    """Whether the nets hold equal tensors, and the largest difference (on the CPU: Lightning hands
    the module back there after fit)."""
    equal, worst = True, 0.0
    for ma, mb in zip(a, b):
        sa, sb = ma.state_dict(), mb.state_dict()
        if sa.keys() != sb.keys():
            return False, float("inf")
        for k in sa:
            x, y = sa[k].detach().cpu().double(), sb[k].detach().cpu().double()
            equal &= torch.equal(x, y)
            worst = max(worst, float((x - y).abs().max()) if x.numel() else 0.0)
    return equal, worst


def bench_case(name: str, args, device: torch.device, extra: list[str]) -> dict:
    case = CASES[name]
    steps = args.steps or (case.cuda_steps if device.type == "cuda" else case.cpu_steps)
    repeats = args.repeats or (case.cuda_repeats if device.type == "cuda" else case.cpu_repeats)
    warmup, total = args.warmup, args.warmup + steps + 1
    trainer = ["trainer=gpu"] if device.type == "cuda" else []
    trainer += ["trainer.deterministic=true"] if args.deterministic else []  # else each Trainer switches it off
    batch = [f"data.batch_size={args.batch_size}"] if args.batch_size else []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cogen-bench-") as tmp:
        cfg = compose_cfg(case.overrides[0].split("=", 1)[1], total, tmp, [*case.overrides[1:], *trainer, *batch, *extra])
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        if len(datamodule.train_dataloader()) < total:
            raise SystemExit(f"{name}: one epoch has {len(datamodule.train_dataloader())} batches; "
                             f"--warmup + --steps + 1 = {total} do not fit")
        sides = {"plain": PlainSide(cfg, datamodule, device), "lightning": LightningSide(cfg, datamodule, device)}
        for side in sides.values():  # warm-up round, untimed
            side.run(warmup, steps)
        times: dict[str, list[float]] = {"plain": [], "lightning": []}
        for r in range(repeats):
            for side in (("plain", "lightning") if r % 4 in (0, 3) else ("lightning", "plain")):  # ABBA
                times[side].append(sides[side].run(warmup, steps))
        equal, max_diff = same_weights(sides["plain"].nets(), sides["lightning"].nets())
    med = {k: statistics.median(v) for k, v in times.items()}
    b = int(cfg.data.batch_size)
    return {
        "case": name, "overrides": [*case.overrides, *trainer, *batch, *extra], "batch_size": b,
        "steps": steps, "repeats": repeats, "warmup": warmup,
        "plain_steps_per_s": round(steps / med["plain"], 2), "lightning_steps_per_s": round(steps / med["lightning"], 2),
        "plain_images_per_s": round(b * steps / med["plain"], 1),
        "lightning_images_per_s": round(b * steps / med["lightning"], 1),
        "overhead_ms_per_step": round(1e3 * (med["lightning"] - med["plain"]) / steps, 3),
        "ratio": round(med["lightning"] / med["plain"], 4),
        "ratio_pairwise_min": round(min(lt / pt for lt, pt in zip(times["lightning"], times["plain"])), 4),
        "ratio_pairwise_max": round(max(lt / pt for lt, pt in zip(times["lightning"], times["plain"])), 4),
        "same_weights": equal, "max_weight_diff": max_diff, "wall_s": round(time.perf_counter() - began, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)} (default all)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=0, help="timed steps per repeat (default: per case and device)")
    p.add_argument("--repeats", type=int, default=0, help="timed repeats of each side (default: per case and device)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every repeat (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU (default 1)")
    p.add_argument("--batch-size", type=int, default=0, help="override every case's data.batch_size")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic CUDA kernels (slower), so that the two sides' weights can agree bit for bit")
    p.add_argument("--fashion-root", default=FASHION, help=f"Fashion-MNIST's IDX files (default {FASHION})")
    p.add_argument("--out", default=str(RESULT))
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every case")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch")
    device = torch.device(args.device)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before the first cuBLAS call
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    quiet_lightning()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    results = []
    for name in cases:
        extra = list(args.overrides)
        if "fashion" in name:
            if not Path(args.fashion_root).is_dir():
                print(f"skipping {name}: no {args.fashion_root} (apt-get install dataset-fashion-mnist, or "
                      f"--fashion-root)", file=sys.stderr)
                continue
            extra.append(f"data.root={args.fashion_root}")
        results.append(bench_case(name, args, device, extra))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    result = {
        "benchmark": "image_overhead", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "deterministic": args.deterministic, "cases": results, "wall_s": round(time.perf_counter() - began, 1),
        "torch": torch.__version__, "lightning": pl.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    report(result)
    return save_result(result, args.out)


def report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Image models: cogen Lightning vs plain PyTorch ({result['device']}, "
                        f"{result['threads']} CPU thread(s))")
    for col in ("case", "batch", "plain steps/s", "Lightning steps/s", "plain images/s", "Lightning images/s",
                "ratio", "overhead ms/step", "same weights"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for c in result["cases"]:
        table.add_row(c["case"], str(c["batch_size"]), f"{c['plain_steps_per_s']:.1f}", f"{c['lightning_steps_per_s']:.1f}",
                      f"{c['plain_images_per_s']:.0f}", f"{c['lightning_images_per_s']:.0f}", f"{c['ratio']:.3f}x",
                      f"{c['overhead_ms_per_step']:.2f}",
                      "yes" if c["same_weights"] else f"no (max diff {c['max_weight_diff']:.1e})")
    Console(file=sys.stdout, width=150).print(table)


if __name__ == "__main__":
    main()
