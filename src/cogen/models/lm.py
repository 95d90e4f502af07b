"""Pre-training a causal language model by next-token cross-entropy (`model=lm_pretrain`).

The result is the reference policy of RL fine-tuning: at the end of fit the model is written
with `save_pretrained` to `save_dir`, where `model/policy=tiny_gpt2` loads it from. On data with
a known grammar (data=markov) val/test also log the grammar's own NLL of the same text, the floor.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


class LMPretrain(pl.LightningModule):
    def __init__(self, policy: nn.Module, lr: float = 3e-3, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.99), save_dir: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["policy"])
        self.policy = policy

    def configure_optimizers(self):
        return torch.optim.AdamW(self.policy.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas),
                                 weight_decay=self.hparams.weight_decay)

    def nll(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-sequence NLL (nats) of every token after the first, which is BOS."""
        logits = self.policy(input_ids=ids).logits[:, :-1]
        return F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").sum(1)

    def training_step(self, batch, batch_idx: int):
        (ids,) = batch
        loss = self.nll(ids).mean() / (ids.shape[1] - 1)
        self.log("train/nll", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        ids, *truth = batch
        tokens = ids.shape[1] - 1
        self.log(f"{stage}/nll", self.nll(ids).mean() / tokens, batch_size=len(ids), sync_dist=True)
        if truth:  # the grammar's NLL of the same sequences: what a perfect model scores
            self.log(f"{stage}/nll_floor", -truth[0].mean() / tokens, batch_size=len(ids), sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_train_end(self) -> None:
        """Write the model where RL finds it (rank 0), with a note of what made it."""
        if not self.hparams.save_dir or not self.trainer.is_global_zero:
            return
        import transformers

        transformers.utils.logging.disable_progress_bar()
        out = Path(self.hparams.save_dir).expanduser()
        self.policy.save_pretrained(str(out))
        tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)
        if hasattr(tokenizer, "save_pretrained"):   # a learnt tokenizer travels with its model
            tokenizer.save_pretrained(str(out))
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        (out / "cogen.json").write_text(json.dumps({"global_step": self.trainer.global_step, "metrics": metrics}, indent=1))
