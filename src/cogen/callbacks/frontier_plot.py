"""The policy against the exact KL-reward frontier, after test: frontier.json and frontier.png in
samples/, for the first `n_prompts` prompts, when the responses can be listed (the toy)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytorch_lightning as pl


class FrontierPlot(pl.Callback):
    def __init__(self, dirpath: str, n_prompts: int = 4, betas: list[float] | None = None):
        self.dirpath, self.n_prompts = dirpath, n_prompts
        self.betas = betas or [math.exp(math.log(0.05) + i * (math.log(50) - math.log(0.05)) / 39) for i in range(40)]

    def on_test_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not hasattr(pl_module, "exact_frontier") or not pl_module.enumerable():
            return
        data = trainer.datamodule
        prompts = [p for p in getattr(data, "ids", [])[: self.n_prompts]]
        if not prompts:
            return
        import torch

        reports = [pl_module.exact_frontier(torch.tensor(p, device=pl_module.device), self.betas) for p in prompts]
        out = Path(self.dirpath)
        out.mkdir(parents=True, exist_ok=True)
        (out / "frontier.json").write_text(json.dumps(reports, indent=1))
        self._plot(reports[0], out / "frontier.png")

    @staticmethod
    def _plot(report: dict, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 3.2))
        ax.plot([p["kl"] for p in report["curve"]], [p["reward"] for p in report["curve"]], "k-", lw=1,
                label="exact frontier")
        ax.plot(report["optimum"]["kl"], report["optimum"]["reward"], "o", mfc="none", mec="k", ms=9,
                label=f"optimum, beta={report['beta']:.3g}")
        ax.plot(report["policy"]["kl"], report["policy"]["reward"], "rx", ms=8,
                label=f"policy (gap {report['policy']['gap']:.3g})")
        ax.set_xlabel("KL(policy || reference), nats")
        ax.set_ylabel("expected reward")
        ax.set_title(f"prompt {report['prompt']!r}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
