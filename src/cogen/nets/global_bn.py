"""BatchNorm over the global batch of a DDP run, on any backend: torch's SyncBatchNorm runs only
on GPUs, and per-rank statistics would make a 2-process CPU run differ from a 1-process one."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """`BatchNorm1d` whose training statistics are summed over all ranks (differentiably)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        count = torch.full((1,), float(x.shape[0]), dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(0), (x * x).sum(0), count]))
        n = sums[-1]
        mean = sums[:c] / n
        var = sums[c:2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / (n - 1), self.momentum)
        out = (x - mean) / torch.sqrt(var + self.eps)
        return out * self.weight + self.bias if self.affine else out


def use_global_batchnorm(module: nn.Module) -> nn.Module:
    """Switch every plain BatchNorm1d of `module` to GlobalBatchNorm1d in place (same parameters)."""
    for m in module.modules():
        if type(m) is nn.BatchNorm1d:
            m.__class__ = GlobalBatchNorm1d
    return module
