"""The reward model's network: a causal LM's trunk and a scalar head on the last real token of
prompt + response (Ziegler et al. 2019 start it from the pre-trained LM, so it reads text as the
policy does). Saved as a transformers folder plus `reward_head.pt`, so that training
(`cogen.models.reward_model`) and RL (`cogen.rl.rewards.LearnedReward`) share one format.

`mean` and `std` are the raw rewards' statistics on the reference LM's responses, set after
training: `forward(..., normalise=True)` returns (r - mean) / std, a reward of mean 0 and std 1
on the reference's text whatever the head's scale (Ziegler et al. normalise the same way), so
model/kl's beta weighs the KL against a reward of known size.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cogen.rl.rollout import position_ids

HEAD_FILE = "reward_head.pt"


class RewardNet(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)   # every response starts at reward 0: no order before the data
        nn.init.zeros_(self.head.bias)
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("std", torch.tensor(1.0))

    def forward(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                response_mask: torch.Tensor, normalise: bool = False) -> torch.Tensor:
        """(B,) rewards. Prompts left-padded, responses right-padded (their mask a prefix of ones)."""
        ids = torch.cat([prompt_ids, response_ids], 1)
        attention = torch.cat([prompt_mask, response_mask], 1).long()
        hidden = self.backbone.base_model(input_ids=ids, attention_mask=attention,
                                          position_ids=position_ids(attention)).last_hidden_state
        last = prompt_ids.shape[1] - 1 + response_mask.long().sum(1)   # the last real token (the prompt's, if no response)
        reward = self.head(hidden[torch.arange(len(ids), device=ids.device), last]).squeeze(-1)
        return (reward - self.mean) / self.std if normalise else reward

    def save(self, folder: str | Path) -> Path:
        out = Path(folder).expanduser()
        self.backbone.save_pretrained(str(out))
        torch.save({"weight": self.head.weight.detach().cpu(), "bias": self.head.bias.detach().cpu(),
                    "mean": self.mean.cpu(), "std": self.std.cpu()}, out / HEAD_FILE)
        return out

    @classmethod
    def load(cls, folder: str | Path) -> "RewardNet":
        """The reward model `save` wrote (the caller checks that the folder exists)."""
        from cogen.nets.lm import causal_lm

        net = cls(causal_lm(path=str(folder)))
        head = torch.load(Path(folder).expanduser() / HEAD_FILE, map_location="cpu", weights_only=True)
        with torch.no_grad():
            net.head.weight.copy_(head["weight"])
            net.head.bias.copy_(head["bias"])
            net.mean.copy_(head["mean"])
            net.std.copy_(head["std"])
        return net
