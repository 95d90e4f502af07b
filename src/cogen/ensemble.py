"""Many lone 2D GAN/PacGAN runs (`cogen.train model=gan|pacgan<m> data=ring8|grid25 seed=k`) trained
in one process, vectorised over a leading member dimension.

Each member is built by the lone run's own code (conf/train.yaml composed with the member's
overrides, `seed_everything`, `instantiate` data then model), so its initial weights, training set
(`make_packs`), batch order (`epoch_permutation`) and noise stream (the module's own generator)
are the lone run's. Only the arithmetic is shared.

Hand-written batched layers (bmm, F.batch_norm over a (rows, E*C) view) rather than
`stack_module_state` + `vmap`: vmap cannot run members whose batches differ in size (the generator
sees B*m rows), cannot update BatchNorm running statistics in place, and adds dispatch cost to
every op of the hot path. What depends on m (the generator, the discriminator's first layer) runs
once per pack group; the rest of the discriminator and one Adam over the stacked tensors
(elementwise, hence per member) run once for all. Each op is chosen so that on CPU a member gets
the same bits as its lone run (see `_Linear`, `_losses`; the test checks it).

Padding to a common m instead keeps the maths exact (zero inputs give padded weights zero gradient,
so Adam never moves them) but not the bits: a padded first layer changes the shape of its
weight-gradient GEMM, and for some shapes (6 -> 8 inputs) MKL then sums in another order; a padded
generator needs a masked BatchNorm written out of smaller ops. GAN training (maxout switches, Adam's
normalised steps) grows such last-bit differences to ~1e-3 within 20-30 steps. On GPU cuBLAS picks
kernels by shape too, so agreement with a lone GPU run is statistical, not bitwise.
"""
from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from cogen.callbacks.run_config import CHECKPOINT_KEY
from cogen.config import CONF_DIR, validate
from cogen.data.mixtures import epoch_permutation
from cogen.nets.mlp import Maxout
from cogen.utils.run_files import run_id_for, write_run_info, write_summary



@dataclass
class Member:
    full: DictConfig  # the composed config with its `hydra` node: choices and overrides for summary.json
    cfg: DictConfig   # what the lone run's task function receives
    data: pl.LightningDataModule
    model: pl.LightningModule
    out: Path


def build_member(overrides: list[str], out: str | Path) -> Member:
    """`cogen.train.run`'s first steps: compose, validate, seed_everything, data, model."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    cfg = OmegaConf.masked_copy(full, [k for k in full if k != "hydra"])
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.run_id = str(out), run_id_for(None)
    validate(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data, model = instantiate(cfg.data), instantiate(cfg.model, _convert_="all")
    data.setup("fit")
    return Member(full, cfg, data, model, Path(out))


def epoch_len(cfg: DictConfig) -> int:
    """Iterations per epoch of the lone run, `trainer.limit_train_batches` included."""
    n, lim = cfg.data.num_samples // cfg.data.batch_size, cfg.trainer.get("limit_train_batches")
    return n if lim is None else min(n, lim) if isinstance(lim, int) else int(n * lim)


def selection(cfg: DictConfig) -> tuple[str | None, str]:
    """(monitor, mode) of the checkpoint the lone run tests; monitor None: the last weights."""
    ckpt = (cfg.get("callbacks") or {}).get("model_checkpoint")
    return (ckpt.monitor, ckpt.mode) if cfg.test_ckpt == "best" and ckpt and ckpt.get("monitor") else (None, "min")


def group_key(m: Member) -> str:
    """Members may share an ensemble when all but seed, pack and mixture agree (lr, betas, sizes, schedule)."""
    model = OmegaConf.to_container(m.cfg.model, resolve=True)
    for k in ("pack", "seed", "metrics"):
        model.pop(k, None)
    model["discriminator"].pop("in_dim")
    d, t = m.cfg.data, m.cfg.trainer
    return repr((model, d.batch_size, d.num_samples, d.eval_samples, epoch_len(m.cfg), t.max_epochs,
                 t.check_val_every_n_epoch, selection(m.cfg)))


@functools.lru_cache(maxsize=None)
def _bulk_ok(shape: tuple[int, int], k: int) -> bool:
    """Whether one draw of k*rows equals k draws of `shape`. torch's CPU normal sampler works in
    blocks of 16, so it holds when the numel is a multiple of 16: checked here, not assumed."""
    a, b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(shape, generator=a) for _ in range(k)])
    y = torch.randn(k * shape[0], shape[1], generator=b)
    return torch.equal(x, y) and torch.equal(a.get_state(), b.get_state())


class _Linear(torch.autograd.Function):
    """x @ w.mT + b per member, with the backward GEMMs of F.linear in F.linear's layout
    (grad_w = grad.mT @ x; bmm's own backward computes (x.mT @ grad).mT: other bits)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return torch.bmm(x, w.mT) if b is None else torch.baddbmm(b.unsqueeze(1), x, w.mT)

    @staticmethod
    def backward(ctx, g):
        (x, w), need = ctx.saved_tensors, ctx.needs_input_grad
        return g.bmm(w) if need[0] else None, g.mT.bmm(x) if need[1] else None, g.sum(1) if need[2] else None


def _linear(h, w, b):
    if w.shape[1] == 1:  # one output: F.linear's matrix-vector path
        h = torch.bmm(w, h.mT).mT
        return h if b is None else h + b.unsqueeze(1)
    return _Linear.apply(h, w, b)


_NAMES = ("weight", "bias", "running_mean", "running_var")


class _Stack:
    """The `.net` (nn.Sequential of cogen.nets.mlp) of every member with its tensors stacked on dim 0:
    one stack per pack group (`groups`: slices of the members) for the first `split` layers, one for
    all members after. Split layers map one tensor per group to one per group; a shared layer
    concatenates them first. Separate stacks, not slices of one: slicing would add a full-size
    zero-fill and copy per group to every backward pass."""

    def __init__(self, nets: list[nn.Module], device, groups: list[slice], split: int):
        self.steps, self.entries = [], []  # entries: (members slice, tensor, is a parameter)
        for i, mods in enumerate(zip(*(n.net for n in nets))):
            m = mods[0]
            if not isinstance(m, (Maxout, nn.Linear, nn.BatchNorm1d, nn.ReLU)):
                raise TypeError(f"cogen.ensemble has no batched version of {type(m).__name__}")
            mods = [x.linear for x in mods] if isinstance(m, Maxout) else list(mods)
            names = _NAMES[: 4 if isinstance(m, nn.BatchNorm1d) else 0 if isinstance(m, nn.ReLU) else 2]
            parts = []
            for sl in groups if i < split else [slice(None)]:
                ts = [None if getattr(mods[0], k) is None else
                      torch.stack([getattr(x, k).detach() for x in mods[sl]]).to(device) for k in names]
                self.entries += [(sl, t, k in _NAMES[:2]) for k, t in zip(names, ts) if t is not None]
                parts.append((sl, ts))
            self.steps.append((type(m).__name__, mods, parts, getattr(m, "pieces", None), i >= split))
        self.params = [t.requires_grad_() for _, t, is_param in self.entries if is_param]

    @staticmethod
    def _apply(kind: str, h: torch.Tensor, ts: list, mod: nn.Module, train: bool, pieces) -> torch.Tensor:
        if kind == "ReLU":
            return h.relu()
        if kind == "BatchNorm1d":  # torch's own kernel on (rows, E'*C): per-member channels
            e, r, c = h.shape
            return F.batch_norm(h.transpose(0, 1).reshape(r, e * c), ts[2].view(-1), ts[3].view(-1), ts[0].view(-1),
                                ts[1].view(-1), train, mod.momentum, mod.eps).view(r, e, c).transpose(0, 1)
        h = _linear(h, *ts)
        return h.unflatten(-1, (-1, pieces)).amax(-1) if pieces else h

    def __call__(self, h: list[torch.Tensor], train: bool):
        """h: one (members of the group, rows, features) tensor per group."""
        for kind, mods, parts, pieces, shared in self.steps:
            if shared and isinstance(h, list):
                h = torch.cat(h)
            if isinstance(h, list):
                h = [self._apply(kind, x, ts, mods[0], train, pieces) for x, (_, ts) in zip(h, parts)]
            else:
                h = self._apply(kind, h, parts[0][1], mods[0], train, pieces)
        return h

    def tensors(self) -> list[torch.Tensor]:
        return [t for _, t, _ in self.entries]

    @torch.no_grad()
    def unstack(self, steps_done: int) -> None:
        """Copy each member's slices back into its own nn.Module."""
        for kind, mods, parts, _, _ in self.steps:
            for sl, ts in parts:
                for j, mod in enumerate(mods[sl]):
                    for name, t in zip(_NAMES, ts):
                        if t is not None:
                            getattr(mod, name).copy_(t[j])
                    if kind == "BatchNorm1d":
                        mod.num_batches_tracked.fill_(steps_done)


class GANEnsemble:
    """Trains members from `build_member` that share a `group_key`, on any device. Kept sorted by m."""

    def __init__(self, members: list[Member], device="cpu", chunk: int = 250):
        if len({group_key(m) for m in members}) != 1:
            raise ValueError("members differ in more than seed, pack and mixture: group them by group_key")
        self.members, self.dev, c = sorted(members, key=lambda m: m.model.pack), torch.device(device), members[0].cfg
        packs = [m.model.pack for m in self.members]
        self.groups = [(p, slice(packs.index(p), len(packs) - packs[::-1].index(p))) for p in sorted(set(packs))]
        self.E, self.B, self.N, self.L = len(packs), c.data.batch_size, c.data.num_samples, epoch_len(c)
        self.nz, self.chunk, (self.monitor, self.mode) = c.model.noise_dim, chunk, selection(c)
        slices, gens = [sl for _, sl in self.groups], [m.model.generator for m in self.members]
        self.gen = _Stack(gens, self.dev, slices, split=len(gens[0].net))  # all of it depends on m
        self.disc = _Stack([m.model.discriminator for m in self.members], self.dev, slices, split=1)
        self.rows = [torch.stack([m.data.train_rows for m in self.members[sl]]).to(self.dev) for _, sl in self.groups]
        fused = {"fused": True} if self.dev.type == "cuda" else {}
        self.opt = torch.optim.Adam(self.disc.params + self.gen.params, lr=c.model.lr, betas=tuple(c.model.betas),
                                    **fused)
        self.eval_noise = {s: [torch.stack([getattr(m.model, f"{s}_noise") for m in self.members[sl]]).to(self.dev)
                               for sl in slices] for s in ("val", "test")}
        self.finite = torch.ones(self.E, dtype=torch.bool, device=self.dev)
        self.steps, self.best, self.best_it, self._data = 0, None, [None] * self.E, (None, None)

    def _epoch_data(self, epoch: int) -> list[torch.Tensor]:
        """Per pack group (E', L*B, dim*m): the epoch's batches in each member's EpochBatchSampler order."""
        out = []
        for rows, (_, sl) in zip(self.rows, self.groups):
            perm = torch.stack([epoch_permutation(self.N, m.data.seed, epoch)[: self.L * self.B]
                                for m in self.members[sl]])
            out.append(rows[torch.arange(len(perm), device=self.dev)[:, None], perm.to(self.dev)])
        return out

    def _noise(self, k: int) -> list[torch.Tensor]:
        """Per pack group (k, E', B*m, nz): each member's next k draws from its own generator, as the
        lone run draws them (in one call where `_bulk_ok` shows that this gives the same numbers)."""
        out = []
        for p, sl in self.groups:
            shape = (self.B * p, self.nz)
            draw = lambda g: (torch.randn(k * shape[0], self.nz, generator=g) if _bulk_ok(shape, k)
                              else torch.cat([torch.randn(shape, generator=g) for _ in range(k)]))
            out.append(torch.stack([draw(m.model._noise).view(k, *shape) for m in self.members[sl]], 1).to(self.dev))
        return out

    def _losses(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GAN.losses of every member, (E,) each. On CPU member by member, so that softplus's SIMD body
        and scalar tail cover the same elements as in the lone run (the bits differ between the two)."""
        if self.dev.type != "cpu":
            return F.softplus(-d_real).mean(1) + F.softplus(d_fake).mean(1), F.softplus(-d_fake).mean(1)
        pairs = [(F.softplus(-r).mean() + F.softplus(f).mean(), F.softplus(-f).mean()) for r, f in zip(d_real, d_fake)]
        return torch.stack([d for d, _ in pairs]), torch.stack([g for _, g in pairs])

    def _step(self, real: list[torch.Tensor], z: list[torch.Tensor]) -> None:
        """GAN.training_step for all: one forward, both players' gradients, then both Adam steps."""
        fake = [x.reshape(x.shape[0], self.B, -1) for x in self.gen(z, True)]
        d_loss, g_loss = self._losses(self.disc(real, False).squeeze(-1), self.disc(fake, False).squeeze(-1))
        grads = torch.autograd.grad(d_loss.sum(), self.disc.params, retain_graph=True)
        grads += torch.autograd.grad(g_loss.sum(), self.gen.params)
        for p, g in zip(self.disc.params + self.gen.params, grads):
            p.grad = g
        self.opt.step()
        self.finite &= d_loss.isfinite() & g_loss.isfinite()
        self.steps += 1

    @torch.no_grad()
    def score(self, split: str) -> list[dict[str, float]]:
        """GAN.validation_step/test_step: eval-mode samples of the member's fixed noise into its own metrics."""
        x, out = torch.cat(self.gen(self.eval_noise[split], False)).cpu(), []
        for e, m in enumerate(self.members):
            metrics = getattr(m.model, f"{split}_metrics")
            metrics.update(x[e])
            out.append({k: float(v) for k, v in metrics.compute().items()})
            metrics.reset()
        return out

    @torch.no_grad()
    def _validate(self) -> None:
        """Lightning's ModelCheckpoint(monitor, mode): keep each member's generator at its best score
        (the first always, then strictly better ones; NaN is the worst score)."""
        self.val = self.score("val")
        if self.monitor is None:
            return
        worst = math.inf if self.mode == "min" else -math.inf
        cur, first = torch.tensor([v[self.monitor] for v in self.val]).nan_to_num(worst), self.best is None
        if first:
            self.best, self.best_val = [t.clone() for t in self.gen.tensors()], cur
        better = torch.full((self.E,), first) | (cur < self.best_val if self.mode == "min" else cur > self.best_val)
        for b, (sl, t, _) in zip(self.best, self.gen.entries):
            b.copy_(torch.where(better[sl].to(self.dev).view(-1, *[1] * (t.dim() - 1)), t, b))
        self.best_val = torch.where(better, cur, self.best_val)
        self.best_it = [self.steps if up else it for up, it in zip(better.tolist(), self.best_it)]

    @torch.no_grad()
    def _set_gen(self, tensors: list[torch.Tensor]) -> None:
        for t, x in zip(self.gen.tensors(), tensors):
            t.copy_(x)

    def train(self, iterations: int, validate: bool = True) -> None:
        """Step every member up to `iterations`, validating where the lone run validates (each
        `check_val_every_n_epoch` epochs when a best checkpoint is tested, else at the end)."""
        every = self.L * self.members[0].cfg.trainer.check_val_every_n_epoch if self.monitor else iterations
        while self.steps < iterations:
            epoch, pos = divmod(self.steps, self.L)
            self._data = self._data if self._data[0] == epoch else (epoch, self._epoch_data(epoch))
            k = min(self.chunk, self.L - pos, iterations - self.steps)
            z = self._noise(k)
            for i in range(k):
                batch = slice((pos + i) * self.B, (pos + i + 1) * self.B)
                self._step([x[:, batch] for x in self._data[1]], [zg[i] for zg in z])
            if validate and (self.steps % every == 0 or self.steps == iterations):
                self._validate()
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def fit(self, iterations: int) -> dict:
        """Train; test each member's tested weights (best or last); copy the last ones into the member modules."""
        started = time.perf_counter()
        self.train(iterations)
        fit_s, last = time.perf_counter() - started, [t.detach().clone() for t in self.gen.tensors()]
        self._set_gen(self.best or last)
        test = self.score("test")
        self._set_gen(last)
        self.gen.unstack(self.steps)
        self.disc.unstack(self.steps)
        self.metrics = [{**v, **t} for v, t in zip(self.val, test)]
        return {"fit_s": fit_s, "iterations": iterations, "it_per_s": iterations / fit_s}

    def write_runs(self, wall_s: float, fit_s: float, weights: bool = True) -> None:
        """Per member, as a lone run writes them: config.yaml, run.json, summary.json, and
        checkpoints/last.ckpt (final weights, readable by cogen-eval)."""
        hc = HydraConfig.instance()
        previous = hc.cfg
        for m, metrics, ok, best_it in zip(self.members, self.metrics, self.finite.tolist(), self.best_it):
            write_run_info(m.out, m.cfg)
            ckpt = m.out / "checkpoints" / "last.ckpt" if weights else None
            if ckpt:
                ckpt.parent.mkdir(exist_ok=True)
                stored = {k: OmegaConf.to_container(m.cfg[k], resolve=True) for k in ("model", "data")}
                torch.save({"state_dict": m.model.state_dict(), "pytorch-lightning_version": pl.__version__,
                            "noise_rng_state": m.model._noise.get_state(),
                            CHECKPOINT_KEY: {**stored, "seed": m.cfg.seed, "run_id": m.cfg.run_id, "task": m.cfg.task}},
                           ckpt)
            hc.set_config(m.full)  # summary.json records the member's own choices and overrides
            write_summary(m.out, m.cfg, status="completed" if ok else "failed", metrics=metrics if ok else {},
                          global_step=2 * self.steps, epochs=math.ceil(self.steps / self.L),
                          tested_ckpt=str(ckpt) if ckpt and not self.monitor else None,
                          tested_iteration=best_it if self.monitor else self.steps, fit_s=round(fit_s, 2),
                          wall_s=round(wall_s, 2), runner="ensemble", ensemble_size=self.E,
                          **({} if ok else {"error": "a loss became non-finite"}))
        hc.cfg = previous


def main(argv: list[str] | None = None) -> None:
    """python -m cogen.ensemble data=[ring8,grid25] methods=[gan,pacgan2,pacgan3,pacgan4] seeds=10
    iterations=400000 device=cuda out=outputs/ensemble/table1 [chunk=250 weights=true matmul_precision=highest threads=0]
    [any conf/train.yaml override, e.g. protocol=paper]. seeds=N means 0..N-1, seeds=[3,7] those seeds.
    matmul_precision=high allows TF32 on GPU: faster, but no longer the lone run's float32 numbers."""
    opts = dict(data="ring8", methods="gan", seeds="1", iterations="", device="", out="", chunk="250", weights="true",
                matmul_precision="highest", threads="0")
    args = sys.argv[1:] if argv is None else argv
    forwarded = [a for a in args if "=" not in a or a.split("=", 1)[0] not in opts]
    opts.update(a.split("=", 1) for a in args if a not in forwarded)
    items = lambda v: [x.strip() for x in v.strip("[]").split(",") if x.strip()]
    seeds = range(int(opts["seeds"])) if opts["seeds"].isdigit() else [int(s) for s in items(opts["seeds"])]
    device = opts["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision(opts["matmul_precision"])
    if int(opts["threads"]):  # CPU intra-op threads; on a shared machine 1 can be many times faster than 2
        torch.set_num_threads(int(opts["threads"]))
    out, started = Path(opts["out"] or f"outputs/ensemble/{time.strftime('%Y-%m-%d/%H-%M-%S')}"), time.perf_counter()
    groups: dict[str, list[Member]] = {}
    for d in items(opts["data"]):
        for method in items(opts["methods"]):
            for s in seeds:
                overrides = [f"data={d}", f"model={method}", f"seed={s}", *forwarded]
                m = build_member(overrides, out / d / method / f"seed{s}")
                groups.setdefault(group_key(m), []).append(m)
    for group in groups.values():
        ens, t0 = GANEnsemble(group, device, int(opts["chunk"])), time.perf_counter()
        iters = int(opts["iterations"] or group[0].cfg.trainer.max_epochs * ens.L)
        stats = ens.fit(iters)
        ens.write_runs(time.perf_counter() - t0, stats["fit_s"], opts["weights"].lower() == "true")
        print(f"{ens.E} members x {iters} iterations on {device}: {stats['it_per_s']:.2f} it/s, "
              f"{stats['it_per_s'] * ens.E:.1f} member-it/s, fit {stats['fit_s']:.1f} s")
    print(f"wall {time.perf_counter() - started:.1f} s; runs in {out}")


if __name__ == "__main__":
    main()
