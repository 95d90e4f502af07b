"""RL fine-tuning of a language model toward what a reward source rewards, with a KL penalty
that keeps it near a frozen reference copy (Ziegler et al. 2019, "Fine-tuning language models
from human preferences").

Each step samples `samples_per_prompt` responses of `response_length` tokens per prompt
(`cogen.rl.rollout`), scores them with the reward, reads the policy's and the reference's
log-probabilities, and hands the rollout to the algorithm (`cogen.rl.losses`: REINFORCE, RLOO,
GRPO, PPO), which alone decides the advantages and the loss. Beta is fixed or adaptive
(`cogen.rl.kl`). When the response space is small enough to list, val/test also score the
policy exactly against the KL-regularised optimum (`cogen.rl.frontier`).
"""
from __future__ import annotations

import copy
import hashlib

import pytorch_lightning as pl
import torch
from torch import nn

from cogen.config import CogenError
from cogen.rl import frontier
from cogen.rl.losses import Algorithm, masked_mean
from cogen.rl.rewards import Responses, Reward
from cogen.rl.rollout import Rollout, response_stats, sample


class RLLM(pl.LightningModule):
    def __init__(self, policy: nn.Module, reward: Reward, algo: Algorithm, kl, tokenizer,
                 response_length: int = 4, samples_per_prompt: int = 4, temperature: float = 1.0,
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), max_grad_norm: float | None = 1.0,
                 val_samples: int = 64, exact_max_responses: int = 70000, seed: int = 0, eval_seed: int = 2333,
                 eval_reference: bool = False):
        super().__init__()
        if samples_per_prompt < algo.min_group:
            raise CogenError(f"model.samples_per_prompt={samples_per_prompt}: {type(algo).__name__} compares "
                             f"samples of one prompt and needs at least {algo.min_group}.")
        if response_length < 1 or temperature <= 0:
            raise CogenError(f"model.response_length={response_length}, model.temperature={temperature}: both must be > 0.")
        self.save_hyperparameters(ignore=["policy", "reward", "algo", "kl", "tokenizer"])
        self.automatic_optimization = False
        _no_dropout(policy)
        policy.train()  # from_pretrained returns eval mode; without dropout the two agree anyway
        self.policy, self.algo, self.reward, self.kl_ctl, self.tokenizer = policy, algo, reward, kl, tokenizer
        self.reference = copy.deepcopy(policy).requires_grad_(False)  # train mode is harmless: no dropout
        self._reference_sha: str | None = None
        self.value_head = None
        if algo.needs_value:
            self.value_head = nn.Linear(policy.config.hidden_size, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.register_buffer("beta", torch.tensor(kl.init_beta, dtype=torch.float64))
        self.suppress = list(getattr(tokenizer, "never_sample", []))
        eos = getattr(tokenizer, "eos_token_id", None)
        self.stop_token_id = None if eos in self.suppress else eos   # never sampled: fixed-length responses
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._gen = torch.Generator().manual_seed(seed)
        self._exact_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.last_rollout: Rollout | None = None
        # Set by collab=iterative_refinement: the partner's ratings as the training reward
        # (val/test keep model.reward, the noise-free judge).
        self.feedback: Reward | None = None

    def configure_optimizers(self):
        params = list(self.policy.parameters()) + (list(self.value_head.parameters()) if self.value_head else [])
        # One fused kernel for all parameters: the per-tensor loop PyTorch's CPU default runs
        # costs more than the update itself on the small policies.
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        return torch.optim.Adam(params, lr=self.hparams.lr * self.algo.lr_scale, betas=tuple(self.hparams.betas), fused=fused)

    def setup(self, stage: str) -> None:
        """Sampling draws on the model's device, from a stream of its own per DDP rank (before a
        checkpoint restores its state)."""
        device = self.trainer.strategy.root_device
        if self._gen.device != device or self.trainer.world_size > 1:
            self._gen = torch.Generator(device=device).manual_seed(self.hparams.seed + 1000 * self.trainer.global_rank)

    # --- the shared rollout and scoring path ---------------------------------------------------
    def stats(self, model: nn.Module, r: Rollout, value: bool = False, entropy: bool = False) -> dict:
        return response_stats(model, r.ids, r.attention_mask, r.prompt_len, self.suppress, self.hparams.temperature,
                              self.value_head if value else None, entropy)

    @torch.no_grad()
    def rollout(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, k: int,
                generator: torch.Generator | None = None, reward: Reward | None = None,
                policy_stats: bool = True) -> Rollout:
        """k responses per prompt, scored, with the log-probabilities of the reference and (unless
        policy_stats=False: the update's own forward pass will give them) of the policy."""
        response, mask = self.sample_responses(self.policy, prompt_ids, prompt_mask, k, generator)
        prompt_ids, prompt_mask = prompt_ids.repeat_interleave(k, 0), prompt_mask.repeat_interleave(k, 0)
        ids = torch.cat([prompt_ids, response], 1)
        attention = torch.cat([prompt_mask, torch.ones_like(response)], 1)
        r = Rollout(ids, attention, prompt_ids.shape[1], mask, torch.empty(0), torch.empty(0), torch.empty(0), k)
        if policy_stats:
            new = self.stats(self.policy, r, value=self.value_head is not None, entropy=True)
            r.logp, r.entropy, r.values = new["logp"] * mask, new["entropy"], new.get("values")
        with torch.inference_mode():   # the frozen reference never needs autograd
            ref_logp = self.stats(self.reference, r)["logp"]
        r.ref_logp = ref_logp * mask   # an ordinary tensor again: the loss may save it for backward
        r.score = self.score(prompt_ids, prompt_mask, response, mask, reward).to(r.logp)
        return r

    def sample_responses(self, model: nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, k: int,
                         generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """k responses per prompt from `model` (the policy, or the reference), with the run's length,
        temperature, suppressed and stop tokens."""
        return sample(model, prompt_ids, prompt_mask, self.hparams.response_length, generator, self.hparams.temperature,
                      self.suppress, self.stop_token_id, self.pad_token_id, repeats=k)

    def score(self, prompt_ids, prompt_mask, response, mask, reward: Reward | None = None) -> torch.Tensor:
        reward = reward or self.reward
        batch = Responses(prompt_ids, response, mask, prompt_mask=prompt_mask)
        if reward.needs_text:
            batch.prompts = self.decode_rows(prompt_ids, prompt_mask, without_bos=True)
            batch.texts = self.decode_rows(response, mask)
        return reward(batch)

    def decode_rows(self, ids: torch.Tensor, mask: torch.Tensor, without_bos: bool = False) -> list[str]:
        """Each row's kept tokens as text. The rows become lists once, and each distinct row is
        decoded once (a prompt repeats samples_per_prompt times): per-row tensor indexing cost
        more than the rest of the reward on the small policies."""
        texts: dict[tuple[int, ...], str] = {}
        out = []
        for row, keep in zip(ids.tolist(), mask.tolist()):
            tokens = tuple(t for t, k in zip(row, keep) if k)
            if tokens not in texts:
                texts[tokens] = self.tokenizer.decode(self._without_bos(list(tokens)) if without_bos else list(tokens))
            out.append(texts[tokens])
        return out

    def _without_bos(self, ids: list[int]) -> list[int]:
        """A prompt's tokens without the BOS the data put in front: a text reward reads the text alone."""
        return ids[1:] if ids and ids[0] == self.tokenizer.bos_token_id else ids

    # --- training -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int):
        opt = self.optimizers()
        # One update on the whole rollout (REINFORCE, RLOO, GRPO as configured): its forward pass,
        # with gradients, also gives the sampling-time log-probabilities (the same weights), so the
        # rollout skips a forward pass of the policy.
        one_pass = self.algo.epochs == 1 and self.algo.minibatches == 1 and self.value_head is None
        r = self.rollout(batch["input_ids"], batch["attention_mask"], self.hparams.samples_per_prompt, self._gen,
                         reward=self.feedback, policy_stats=not one_pass)
        if one_pass:
            whole = self.stats(self.policy, r, entropy=True)
            r.logp, r.entropy = whole["logp"].detach() * r.mask, whole["entropy"].detach()
        beta = float(self.beta)
        self.algo.advantages(r, beta)
        losses, extra = [], {}
        for _ in range(self.algo.epochs):
            order = torch.randperm(len(r.ids), generator=self._gen, device=self._gen.device).to(self.device)
            for rows in order.chunk(self.algo.minibatches):
                if one_pass:   # the loss is a mean over responses: their order does not matter
                    mb, new = r, whole
                else:
                    mb = r.take(rows)
                    new = self.stats(self.policy, mb, value=self.value_head is not None)
                loss, extra = self.algo.loss(mb, new)
                opt.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                if self.hparams.max_grad_norm:
                    self.clip_gradients(opt, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm")
                opt.step()
                losses.append(loss.detach())
        kl = r.kl.sum(1).mean()
        if self.trainer.world_size > 1:  # one beta on every rank: the global batch's KL
            kl = self.trainer.strategy.reduce(kl, reduce_op="mean")
        self.beta.fill_(self.kl_ctl.update(beta, float(kl), len(r.ids) * self.trainer.world_size))
        self.last_rollout = r
        logs = {**self._rollout_metrics(r, beta, "train"), "train/loss": torch.stack(losses).mean(),
                **{f"train/{k}": v for k, v in extra.items()}}
        if self._logs_this_step():
            self.log_dict(logs, sync_dist=True)
        return {"loss": logs["train/loss"]}

    def _rollout_metrics(self, r: Rollout, beta: float, stage: str) -> dict[str, torch.Tensor]:
        kl = r.kl.sum(1)
        return {f"{stage}/reward": r.score.mean(), f"{stage}/kl": kl.mean(), f"{stage}/beta": torch.tensor(beta),
                f"{stage}/objective": (r.score - beta * kl).mean(),
                f"{stage}/entropy": masked_mean(r.entropy, r.mask), f"{stage}/response_length": r.mask.sum(1).mean()}

    def _logs_this_step(self) -> bool:
        n = self.trainer.log_every_n_steps
        return bool(n) and ((self.trainer.fit_loop.total_batch_idx + 1) % n == 0 or self.trainer.should_stop)

    def sample_rows(self, n: int) -> list[dict]:
        """The first n responses of the last training rollout, decoded: the W&B samples table."""
        r = self.last_rollout
        if r is None:
            return []
        n, kl = min(n, len(r.ids)), r.kl.sum(1)
        prompts = self.decode_rows(r.ids[:n, :r.prompt_len], r.attention_mask[:n, :r.prompt_len], without_bos=True)
        responses = self.decode_rows(r.response[:n], r.mask[:n])
        return [{"prompt": prompts[i], "response": responses[i], "reward": float(r.score[i]), "kl": float(kl[i])}
                for i in range(n)]

    # --- evaluation: sampled metrics, and exact ones when the responses can be listed ------------
    def on_validation_epoch_start(self) -> None:
        self._eval_gen = torch.Generator(device=self.device).manual_seed(self.hparams.eval_seed)
        self._ref_gen = torch.Generator(device=self.device).manual_seed(self.hparams.eval_seed + 1)

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch, stage: str) -> None:
        beta = float(self.beta)
        r = self.rollout(batch["input_ids"], batch["attention_mask"], self.hparams.val_samples, self._eval_gen)
        self.log_dict(self._rollout_metrics(r, beta, stage), batch_size=len(r.ids), sync_dist=True)
        if self.enumerable():
            rows = [self.exact(p[m.bool()], beta) for p, m in zip(batch["input_ids"], batch["attention_mask"])]
            means = {f"{stage}/exact_{k}": sum(row[k] for row in rows) / len(rows) for k in rows[0]}
            self.log_dict(means, batch_size=len(rows), sync_dist=True)
        if stage == "test" and self.hparams.eval_reference:   # the KL = 0 end of a reward-KL frontier
            self.log(f"{stage}/reference_reward", self.reference_reward(batch).mean(), batch_size=len(r.ids), sync_dist=True)

    @torch.no_grad()
    def reference_reward(self, batch) -> torch.Tensor:
        """model.reward of `val_samples` responses per prompt sampled from the frozen reference."""
        k = self.hparams.val_samples
        response, keep = self.sample_responses(self.reference, batch["input_ids"], batch["attention_mask"], k, self._ref_gen)
        ids, mask = batch["input_ids"].repeat_interleave(k, 0), batch["attention_mask"].repeat_interleave(k, 0)
        return self.score(ids, mask, response, keep)

    def enumerable(self) -> bool:
        allowed = len(self.tokenizer) - len(self.suppress)
        return self.stop_token_id is None and allowed ** self.hparams.response_length <= self.hparams.exact_max_responses

    def allowed_tokens(self) -> torch.Tensor:
        return torch.tensor([t for t in range(len(self.tokenizer)) if t not in self.suppress], device=self.device)

    @torch.no_grad()
    def exact(self, prompt: torch.Tensor, beta: float) -> dict[str, float]:
        """The policy's exact (KL, reward) for one prompt against the optimum pi_beta (frontier.gap)."""
        tokens, length = self.allowed_tokens(), self.hparams.response_length
        key = tuple(prompt.tolist())
        if key not in self._exact_cache:  # the reference and a rule reward are fixed: list them once
            ref = frontier.response_logprobs(self.reference, prompt, tokens, length, self.suppress, self.hparams.temperature)
            ys = frontier.all_responses(tokens, length)
            rewards = torch.cat([self.score(prompt.expand(len(y), -1), torch.ones(len(y), len(prompt), device=y.device),
                                            y, torch.ones(y.shape, device=y.device)) for y in ys.split(8192)]).to(ref)
            self._exact_cache[key] = (ref, rewards)
        ref, rewards = self._exact_cache[key]
        logp = frontier.response_logprobs(self.policy, prompt, tokens, length, self.suppress, self.hparams.temperature)
        return frontier.gap(logp, ref, rewards, beta)

    @torch.no_grad()
    def exact_frontier(self, prompt: torch.Tensor, betas) -> dict:
        """For one prompt: the exact frontier over `betas`, pi_beta at the current beta, and the policy."""
        beta = float(self.beta)
        here = self.exact(prompt, beta)  # fills the cache of the reference and the rewards
        ref, rewards = self._exact_cache[tuple(prompt.tolist())]
        return {"prompt": self.tokenizer.decode(prompt.tolist()), "beta": beta,
                "curve": frontier.curve(ref, rewards, betas),
                "optimum": {"kl": here["opt_kl"], "reward": here["opt_reward"]},
                "policy": {k: here[k] for k in ("kl", "reward", "gap", "reward_gap_at_kl")}}

    # --- checkpoints: the reference is rebuilt from its folder, not stored -------------------------
    def reference_fingerprint(self) -> str:
        """SHA-256 of the frozen reference's weights, computed once: what a resumed run checks."""
        if self._reference_sha is None:
            self._reference_sha = weights_sha256(self.reference)
        return self._reference_sha

    def reference_source(self) -> str:
        """The folder the reference was loaded from ('' for a policy built fresh from a config)."""
        return str(getattr(self.reference, "name_or_path", "") or "")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rollout_rng_state"] = self._gen.get_state()
        if self.reference_source():
            # The config rebuilds it from its folder: storing it would add the policy's size again
            # to every checkpoint (540 MB with SmolLM2-135M). Its fingerprint proves it on load.
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith("reference.")]:
                del state[key]
            checkpoint["reference"] = {"source": self.reference_source(), "sha256": self.reference_fingerprint()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rollout_rng_state" in checkpoint and checkpoint["rollout_rng_state"].numel() == self._gen.get_state().numel():
            self._gen.set_state(checkpoint["rollout_rng_state"])
        stored = checkpoint.get("reference")
        if stored:
            if stored["sha256"] != self.reference_fingerprint():
                raise CogenError(f"this checkpoint's reference was loaded from {stored['source']}, and the weights the "
                                 f"config loads now ({self.reference_source() or 'a fresh policy'}) differ from them: "
                                 f"restore that folder, or set model.policy.path to where those weights are now.")
            checkpoint["state_dict"].update({f"reference.{k}": v for k, v in self.reference.state_dict().items()})


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _no_dropout(model: nn.Module) -> None:
    """RL compares log-probabilities at sampling and at update time: they must agree."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
