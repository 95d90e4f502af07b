"""Rows of token ids of different lengths as one batch: the padding every language-model path
shares (prompts on the left, so that generation starts at one column; responses on the right)."""
from __future__ import annotations

import torch


def pad_rows(rows: list[list[int]], value: int, left: bool = True, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask): the rows padded with `value` to the longest (at least 1), mask 1 on real tokens."""
    width = max(1, max(map(len, rows)))
    gaps = [width - len(r) for r in rows]
    ids = [[value] * g + r if left else r + [value] * g for r, g in zip(rows, gaps)]
    mask = [[0] * g + [1] * len(r) if left else [1] * len(r) + [0] * g for r, g in zip(rows, gaps)]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)
