"""A module in eval mode for a block, e.g. to draw samples in the middle of training."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Dropout off and BatchNorm on its running statistics inside the block; the module's own
    train/eval state again after it, even on an error."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
