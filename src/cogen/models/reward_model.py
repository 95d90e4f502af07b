"""The reward model of RLHF (`model=reward_model`): the pre-trained LM with a scalar head
(`cogen.nets.reward.RewardNet`), trained with the Bradley-Terry loss -log sigmoid(r_chosen -
r_rejected) on a partner's pairwise preferences (`data=preferences`), as Ziegler et al. (2019) do.

Metrics: `<stage>/pair_accuracy` against the partner's labels on every pair (what a run with a
person can check; below 1 - p/2 at label noise p, and a pair the judge scores equally is a coin:
data=preferences writes the judge's own score, the ceiling, to preferences.json). Where the
data has a judge, on the pairs it has a preference on (strict): `<stage>/strict_pair_accuracy`
against the partner's labels (ceiling 1 - p/2) and `<stage>/oracle_accuracy` against the judge's
noise-free preference. A pair the model scores equally counts half. At the end of fit (rank 0) the weights that test
scores (the checkpoint callback's best, else the last) are standardised on the training responses
and saved to `save_dir` with a note of the metrics (cogen.json), where `model/reward=learned`
loads them; test adds its metrics to the note.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from cogen.nets.reward import RewardNet

METRICS = ("pair_accuracy", "strict_pair_accuracy", "oracle_accuracy")


def bradley_terry_loss(first: torch.Tensor, second: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean -log sigmoid(r_chosen - r_rejected); label 1 where the second response is preferred."""
    margin = (second - first) * (2 * label.to(first.dtype) - 1)
    return -F.logsigmoid(margin).mean()


def agreement(first: torch.Tensor, second: torch.Tensor, prefers_second: torch.Tensor) -> torch.Tensor:
    """1 where the rewards order the pair as `prefers_second` says, 0 where not, 0.5 on a tie."""
    diff = second - first
    return torch.where(diff == 0, 0.5, ((diff > 0) == prefers_second.bool()).to(first.dtype))


class RewardModel(pl.LightningModule):
    def __init__(self, backbone: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), save_dir: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        backbone.train()   # from_pretrained returns eval mode
        self.net = RewardNet(backbone)
        self.metrics = nn.ModuleDict({f"{stage}_{name}": MeanMetric() for stage in ("val", "test") for name in METRICS})
        self.saved: Path | None = None

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas),
                                 weight_decay=self.hparams.weight_decay)

    def rewards(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw rewards of the first and the second response of each pair, in one forward pass."""
        prompt_ids, prompt_mask = batch["prompt_ids"].repeat(2, 1), batch["prompt_mask"].repeat(2, 1)
        response = torch.cat([batch["first"], batch["second"]])
        mask = torch.cat([batch["first_mask"], batch["second_mask"]])
        return self.net(prompt_ids, prompt_mask, response, mask).chunk(2)

    def training_step(self, batch: dict, batch_idx: int):
        first, second = self.rewards(batch)
        loss = bradley_terry_loss(first, second, batch["label"])
        self.log_dict({"train/loss": loss, "train/pair_accuracy": agreement(first, second, batch["label"]).mean()},
                      prog_bar=True, batch_size=len(first))
        return loss

    def _evaluate(self, batch: dict, stage: str) -> None:
        first, second = self.rewards(batch)
        n = len(first)
        self.log(f"{stage}/loss", bradley_terry_loss(first, second, batch["label"]), batch_size=n, sync_dist=True)
        accuracy = self.metrics[f"{stage}_pair_accuracy"]
        accuracy.update(agreement(first, second, batch["label"]))
        self.log(f"{stage}/pair_accuracy", accuracy, batch_size=n)
        oracle = batch["oracle"]
        strict = ~oracle.isnan().any(1) & (oracle[:, 0] != oracle[:, 1])
        if strict.any():   # with a judge: where it has a preference, agreement with the labels and with it
            a, b, n = first[strict], second[strict], int(strict.sum())
            for name, prefers_second in (("strict_pair_accuracy", batch["label"][strict]),
                                         ("oracle_accuracy", oracle[strict, 1] > oracle[strict, 0])):
                self.metrics[f"{stage}_{name}"].update(agreement(a, b, prefers_second))
                self.log(f"{stage}/{name}", self.metrics[f"{stage}_{name}"], batch_size=n)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # --- the saved reward model ----------------------------------------------------------------
    def on_train_end(self) -> None:
        """Save (rank 0) the weights test scores, standardised on the training responses."""
        if not self.hparams.save_dir or not self.trainer.is_global_zero:
            return
        checkpoint = getattr(self.trainer.checkpoint_callback, "best_model_path", "") or None
        if checkpoint:
            state = torch.load(checkpoint, map_location=self.device, weights_only=False)["state_dict"]
            self.load_state_dict(state)
        data = self.trainer.datamodule
        self.standardise(data.train_dataloader())
        import transformers

        transformers.utils.logging.disable_progress_bar()
        self.saved = self.net.save(self.hparams.save_dir)
        tokenizer = getattr(data, "tokenizer", None)
        if hasattr(tokenizer, "save_pretrained"):   # a learnt tokenizer travels with its model, as in model=lm_pretrain
            tokenizer.save_pretrained(str(self.saved))
        self._write_note({"global_step": self.trainer.global_step, "checkpoint": checkpoint,
                          "mean": float(self.net.mean), "std": float(self.net.std), "metrics": self._metrics(),
                          "labels": getattr(data, "summary", {})})

    @torch.no_grad()
    def standardise(self, loader) -> None:
        """mean and std of the raw rewards of every response in `loader` (the reference's)."""
        self.net.mean.fill_(0.0)
        self.net.std.fill_(1.0)
        was_training = self.net.training
        self.net.eval()
        rewards = torch.cat([torch.cat(self.rewards({k: v.to(self.device) for k, v in batch.items()})) for batch in loader])
        self.net.train(was_training)
        self.net.mean.fill_(rewards.mean())
        self.net.std.fill_(rewards.std().clamp(min=1e-6))

    def on_test_end(self) -> None:
        if self.saved is not None and self.trainer.is_global_zero:
            note = json.loads((self.saved / "cogen.json").read_text())
            self._write_note({**note, "metrics": {**note["metrics"], **self._metrics()}})

    def _metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}

    def _write_note(self, note: dict) -> None:
        (self.saved / "cogen.json").write_text(json.dumps(note, indent=1))
