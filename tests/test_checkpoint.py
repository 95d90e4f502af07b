"""last.ckpt holds the final weights even when the monitored metric stopped improving
(Lightning 2.6 alone keeps the last improving epoch there)."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from cogen.callbacks.checkpoint import KeepLastCheckpoint


class WorseEveryEpoch(BoringModel):
    def on_validation_epoch_end(self) -> None:
        self.log("val/score", float(self.current_epoch))   # best (min) at epoch 0, never again


def test_last_checkpoint_is_the_final_model_when_the_metric_stops_improving(tmp_path):
    ckpt = KeepLastCheckpoint(dirpath=tmp_path, monitor="val/score", mode="min", save_last=True, save_top_k=1)
    trainer = pl.Trainer(max_epochs=3, limit_train_batches=4, limit_val_batches=1, callbacks=[ckpt], logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    model = WorseEveryEpoch()
    trainer.fit(model)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    best = torch.load(ckpt.best_model_path, weights_only=False)
    assert trainer.global_step == 12 and last["global_step"] == 12 and best["global_step"] == 4
    for key, value in model.state_dict().items():
        assert torch.equal(last["state_dict"][key], value)
