"""Throughput of the vectorised GAN ensemble (cogen.ensemble) against E lone plain-PyTorch loops.

Both sides train the same members (methods x seeds, built by the lone run's own code) for the same
iterations on the device present; the lone side is GAN.training_step without Lightning, one member
after the other. Prints member-iterations/s of each and their ratio.

    python benchmarks/ensemble_throughput.py                      # CPU default: 8 members, < 60 s
    python benchmarks/ensemble_throughput.py --seeds 10 --data ring8,grid25 --iterations 200 --device cuda
"""
from __future__ import annotations

import argparse
import time

import torch

from cogen.data.mixtures import epoch_permutation
from cogen.ensemble import GANEnsemble, build_member


def members(args, tag: str):
    common = [f"data.num_samples={args.num_samples}", "callbacks=none", "logger=csv"]
    return [build_member([f"data={d}", f"model={m}", f"seed={s}", *common], f"outputs/bench/{tag}")
            for d in args.data.split(",") for m in args.methods.split(",") for s in range(args.seeds)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def lone_loops(ms, iterations: int, device: str, warmup: int) -> float:
    """Seconds for `iterations` steps of every member, one member at a time (warm-up steps not timed)."""
    total = 0.0
    for m in ms:
        gan, rows = m.model.to(device), m.data.train_rows.to(device)
        b, lr, betas = m.cfg.data.batch_size, m.cfg.model.lr, tuple(m.cfg.model.betas)
        opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=betas)
        opt_g = torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=betas)
        order = epoch_permutation(m.cfg.data.num_samples, m.data.seed, 0).to(device)
        for it in range(warmup + iterations):
            if it == warmup:
                sync(device)
                started = time.perf_counter()
            real = rows[order[it * b:(it + 1) * b]]
            noise = torch.randn(b * gan.pack, gan.noise_dim, generator=gan._noise).to(real)
            d_loss, g_loss = gan.losses(real, noise)
            opt_d.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            d_loss.backward(inputs=list(gan.discriminator.parameters()), retain_graph=True)
            g_loss.backward(inputs=list(gan.generator.parameters()))
            opt_d.step()
            opt_g.step()
        sync(device)
        total += time.perf_counter() - started
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="ring8")
    p.add_argument("--methods", default="gan,pacgan2,pacgan3,pacgan4")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (1 keeps a shared machine usable)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    ens = GANEnsemble(members(args, "ensemble"), args.device, chunk=args.iterations)
    ens.train(args.warmup, validate=False)
    sync(args.device)
    started = time.perf_counter()
    ens.train(args.warmup + args.iterations, validate=False)
    ens_s = time.perf_counter() - started
    lone_s = lone_loops(members(args, "lone"), args.iterations, args.device, args.warmup)

    e, n = ens.E, args.iterations
    print(f"device {args.device}, {e} members ({args.methods} x {args.seeds} seeds, {args.data}), {n} iterations each")
    print(f"ensemble: {e * n / ens_s:9.1f} member-it/s  ({n / ens_s:.2f} it/s, {ens_s:.2f} s)")
    print(f"lone:     {e * n / lone_s:9.1f} member-it/s  ({lone_s:.2f} s for {e} loops)")
    print(f"ratio ensemble/lone: {lone_s / ens_s:.2f}x")


if __name__ == "__main__":
    main()
