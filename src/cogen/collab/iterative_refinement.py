"""collab=iterative_refinement: rounds of generate, partner feedback, update.

Every `every_n_epochs` training epochs (from `start_epoch`), the mode draws `n_per_round`
samples, asks its partner to rate them (1-5), and updates the model on what the partner liked:
- update=filtered: fine-tune on the samples rated at least `keep_at_least` (all weight 1);
- update=weighted: reward-weighted fine-tuning on every rated sample, weight (rating - 1) / 4.
Kept samples join a buffer (the newest `buffer_size`); each round takes `refine_steps` steps of
`pl_module.refine(images, weights)` on batches drawn from it, between the epochs on the data.

The partner's wish is a target class; the goal metric `<stage>/goal` is the share of `n_eval`
fresh samples that the domain classifier assigns to it, without the partner's noise. Logged with
it: `feedback/answers` (ratings spent so far), `feedback/kept` and `feedback/mean_rating` per round.
When the budget is spent the mode says so once and, by `on_budget_spent`, keeps fine-tuning on
the liked samples it has after every epoch (`reuse`: feedback once paid for keeps working), trains
on the data only (`data`), or ends training (`stop`). `feedback/refine_steps` counts the steps taken.

With the RL-tuned LM (model=rl_lm) a round is every training rollout: the partner rates each
response, and the rating, mapped onto `reward_range`, is its reward in the policy-gradient update
(`PartnerReward`). Val/test keep scoring with model.reward, the noise-free judge. When the budget
is spent, `stop` ends training; `data` or `reuse` hand the reward back to model.reward.

A simulated partner without an oracle of its own is given the family's judge: the domain
classifier's belief in `target` for images, model.reward scaled from `reward_range` to [0, 1] for
the RL-tuned LM.
"""
from __future__ import annotations

import logging
from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn

from cogen.collab import text
from cogen.collab.oracles import ClassPreference, RewardScale
from cogen.collab.partner import RATINGS, Partner, partner_state, restore_partner, simulated_parts
from cogen.config import CogenError
from cogen.metrics.adherence import PromptAdherence
from cogen.rl.rewards import Responses, Reward
from cogen.utils.modes import eval_mode

log = logging.getLogger(__name__)
UPDATES, ON_SPENT = ("filtered", "weighted"), ("reuse", "data", "stop")


class IterativeRefinement(pl.Callback):
    def __init__(self, partner: Partner, judge: Callable[[], nn.Module], target: int, n_per_round: int = 64,
                 every_n_epochs: int = 1, start_epoch: int | None = 0, update: str = "filtered", keep_at_least: int = 4,
                 buffer_size: int = 1024, refine_steps: int = 10, refine_batch: int = 64,
                 on_budget_spent: str = "reuse", n_eval: int = 1000, seed: int = 0,
                 reward_range: tuple[float, float] = (0.0, 1.0)):
        if update not in UPDATES:
            raise CogenError(f"collab.update={update!r}: use one of {', '.join(UPDATES)}.")
        if on_budget_spent not in ON_SPENT:
            raise CogenError(f"collab.on_budget_spent={on_budget_spent!r}: use one of {', '.join(ON_SPENT)}.")
        if not RATINGS[0] <= keep_at_least <= RATINGS[1]:
            raise CogenError(f"collab.keep_at_least={keep_at_least}: a rating from {RATINGS[0]} to {RATINGS[1]}.")
        if min(n_per_round, every_n_epochs, buffer_size, refine_batch, n_eval) < 1 or refine_steps < 0:
            raise CogenError("collab.n_per_round, every_n_epochs, buffer_size, refine_batch and n_eval must be at "
                             "least 1, and refine_steps at least 0.")
        self.partner, self.target, self.n_per_round = partner, int(target), n_per_round
        self.every_n_epochs, self.start_epoch, self.update, self.keep_at_least = every_n_epochs, start_epoch or 0, update, keep_at_least
        self.buffer_size, self.refine_steps, self.refine_batch = buffer_size, refine_steps, refine_batch
        self.on_budget_spent, self.n_eval, self.seed = on_budget_spent, n_eval, seed
        if not reward_range[0] < reward_range[1]:
            raise CogenError(f"collab.reward_range={list(reward_range)}: the model.reward values rated 1 and 5, lowest first.")
        self.judge, self.goal, self.reward_range = judge, None, tuple(reward_range)
        self.rates_rollouts = False   # the RL-tuned LM: every training rollout is rated (set in setup)
        self.generator = torch.Generator().manual_seed(seed)
        self.images = self.weights = None
        self.answers, self.spent, self.refine_steps_taken = 0, False, 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if text.is_text_model(pl_module):   # the RL-tuned LM
            self._give_oracle(RewardScale(pl_module.reward, *self.reward_range))
            pl_module.feedback = PartnerReward(self, trainer, pl_module.reward)
            self.rates_rollouts = True
            return
        if not (callable(getattr(pl_module, "sample", None)) and callable(getattr(pl_module, "refine", None))):
            raise CogenError(f"collab=iterative_refinement needs a model that samples images and can be refined on "
                             f"them (model=vae, vae_conv, dcgan), or model=rl_lm; {type(pl_module).__name__} cannot.")
        if getattr(pl_module, "num_classes", 0):
            raise CogenError("collab=iterative_refinement refines an unconditional model toward what the partner "
                             "likes: drop model.num_classes.")
        if self.goal is None:
            with torch.random.fork_rng(devices=[]):   # building (or training) the judge leaves the run's draws alone
                self.goal = PromptAdherence(self.judge())
        self._give_oracle(ClassPreference(self.goal.classifier, self.target))

    def _give_oracle(self, oracle) -> None:
        for simulated in simulated_parts(self.partner):
            if simulated.oracle is None:
                simulated.oracle = oracle

    def budget_spent(self, trainer: pl.Trainer) -> None:
        self.spent = True
        then = {"stop": "ends training", "data": "trains on the data only from now on",
                "reuse": "keeps fine-tuning on the liked samples it has"}[self.on_budget_spent]
        if self.rates_rollouts and self.on_budget_spent != "stop":
            then = "rewards the rollouts with model.reward from now on"
        log.info("the partner's budget is spent after %d ratings: iterative_refinement %s", self.answers, then)
        if self.on_budget_spent == "stop":
            trainer.should_stop = True

    def ask_ratings(self, items, trainer: pl.Trainer) -> tuple[torch.Tensor | None, int]:
        """The partner's ratings of `items` and how many it gave; fewer than asked spends the budget."""
        ratings = None if self.spent else self.partner.rate(items)
        got = 0 if ratings is None else len(ratings)
        self.answers += got
        if got < len(items) and not self.spent:
            self.budget_spent(trainer)
        return ratings, got

    # -- a round --------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self.rates_rollouts and epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every_n_epochs == 0:
            if not self.spent:
                self.round(trainer, pl_module)
            elif self.on_budget_spent == "reuse":
                self.refine(pl_module)
        pl_module.log_dict({"feedback/answers": float(self.answers), "feedback/refine_steps": float(self.refine_steps_taken)})

    def _sample(self, pl_module: pl.LightningModule, n: int, generator: torch.Generator) -> torch.Tensor:
        with eval_mode(pl_module):
            return pl_module.sample(n, generator=generator)

    def round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        images = self._sample(pl_module, self.n_per_round, self._device_generator(pl_module))
        ratings, got = self.ask_ratings(images, trainer)
        if not got:
            return
        ratings = ratings.to(images.device).float()
        images = images[:got]
        if self.update == "filtered":
            keep = ratings >= self.keep_at_least
            weights = torch.ones_like(ratings)
        else:
            weights = (ratings - RATINGS[0]) / (RATINGS[1] - RATINGS[0])
            keep = weights > 0
        pl_module.log_dict({"feedback/kept": keep.sum().float(), "feedback/mean_rating": ratings.mean()})
        self._add(images[keep].detach(), weights[keep])
        self.refine(pl_module)

    def _device_generator(self, pl_module: pl.LightningModule) -> torch.Generator:
        """Draws for the samples shown come from the mode's own seeded stream, on the model's device."""
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        return torch.Generator(device=pl_module.device).manual_seed(seed)

    def _add(self, images: torch.Tensor, weights: torch.Tensor) -> None:
        if self.images is None:
            self.images, self.weights = images, weights
        else:
            self.images = torch.cat([self.images.to(images.device), images])[-self.buffer_size:]
            self.weights = torch.cat([self.weights.to(weights.device), weights])[-self.buffer_size:]

    def refine(self, pl_module: pl.LightningModule) -> None:
        if self.images is None or not len(self.images):
            return
        for _ in range(self.refine_steps):
            index = torch.randint(len(self.images), (self.refine_batch,), generator=self.generator)
            pl_module.refine(self.images[index.to(self.images.device)], self.weights[index.to(self.weights.device)])
            self.refine_steps_taken += 1

    # -- the goal -------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, pl_module: pl.LightningModule, stage: str) -> float:
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        images = self._sample(pl_module, self.n_eval, generator)
        self.goal.to(pl_module.device).reset()
        self.goal.update(images, torch.full((len(images),), self.target, device=images.device))
        goal = self.goal.compute()
        pl_module.log_dict({f"{stage}/goal": goal, f"{stage}/answers": float(self.answers)})
        return float(goal)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rates_rollouts:   # the RL-tuned LM: its own val/test reward is the goal
            pl_module.log("val/answers", float(self.answers))
        elif not trainer.sanity_checking:
            self.score(pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rates_rollouts:
            pl_module.log("test/answers", float(self.answers))
        else:
            self.score(pl_module, "test")

    # -- resuming -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"images": self.images, "weights": self.weights, "answers": self.answers, "spent": self.spent,
                "refine_steps": self.refine_steps_taken, "generator": self.generator.get_state(),
                "partner": partner_state(self.partner)}

    def load_state_dict(self, state: dict) -> None:
        self.images, self.weights, self.answers, self.spent = state["images"], state["weights"], state["answers"], state["spent"]
        self.refine_steps_taken = state.get("refine_steps", 0)
        self.generator.set_state(state["generator"])
        restore_partner(self.partner, state.get("partner"))


class PartnerReward(Reward):
    """The RL-tuned LM's training reward under collab=iterative_refinement: the partner's rating of
    each response, mapped onto model.reward's units (rating 1 -> low, 5 -> high of `reward_range`),
    so model.kl's beta weighs the KL the same with or without a partner. Responses past the budget
    get model.reward itself."""

    needs_text = True

    def __init__(self, mode: IterativeRefinement, trainer: pl.Trainer, fallback: Reward):
        self.mode, self.trainer, self.fallback = mode, trainer, fallback

    def __call__(self, batch: Responses) -> torch.Tensor:
        ratings, got = self.mode.ask_ratings(batch.texts, self.trainer)
        (low, high), (worst, best) = self.mode.reward_range, RATINGS
        rated = ratings.float().cpu() if got else torch.empty(0)
        reward = low + (rated - worst) / (best - worst) * (high - low)
        if got < len(batch.texts):
            reward = torch.cat([reward, torch.as_tensor(self.fallback(batch), dtype=torch.float32).cpu()[got:]])
        return reward
