"""RL fine-tuning speed: cogen's RLOO (or GRPO) against TRL's RLOOTrainer (or GRPOTrainer), trl 1.16.

    python benchmarks/rl_vs_trl.py [--updates 100] [--seed 0] [--algo rloo|grpo] [--threads N] [--repeats 3] [--fresh] [--out F]
    python benchmarks/rl_vs_trl.py --task smollm2 --device cuda --updates 50 --eval-samples 256   # the GPU pair

Why: cogen's goal is the same reward as TRL in at most half TRL's wall time on a CPU. Both run
here, one after the other in one process, on one task read from cogen's composed config
(`model=rl_lm`): the tiny GPT-2 (2 layers, width 64) loaded from one save_pretrained folder (the
pre-trained reference, made by `cogen-train model=lm_pretrain task=lm_pretrain` if missing;
`--fresh`: an untrained one built from the config with the seed), the prompt BOS alone, 4 tokens
per response (BOS, the only EOS, is suppressed: every response has 4 words), the vowel reward
(model/reward=rule), 32 prompts x 4 samples = 128 responses per update, `--updates` updates of
one pass each, Adam lr 1e-3 betas (0.9, 0.999) (TRL: AdamW, weight decay 0, constant schedule),
grad norm clipped at 1, temperature 1, beta = model.kl.beta, fp32, no dropout. cogen runs its
module and Trainer with no logger, callbacks, checkpoints, validation or test (so not the exact
enumeration); TRL runs with logging, saving, bf16, gradient checkpointing and progress bars off.
Timed: `trainer.fit` against `trainer.train()`; building models, data and trainers is outside.
Each side runs `--repeats` times, alternated, and its fastest run counts (the one least
disturbed by other work on the machine); every run's time is in the JSON.
Then each trained policy, and the reference, samples `--eval-samples` responses with one sampler
(`cogen.rl.rollout.sample`, one seed), scored by cogen's reward: mean +- standard error.

`--task smollm2` is the pair on real text (experiment=sentiment_rl with model/policy=smollm2_135m,
data=review_prompts_smollm2): SmolLM2-135M-Instruct continues 16 review openings x 4 samples with
24 tokens at temperature 0.7, VADER's compound score is the reward, beta 0.1, lr 3e-4. Both load
the float32 copy that `cogen.nets.lm.smollm2` caches; TRL's prompts are cogen's with their BOS
written as text, so both read the same token ids. `--device cuda` runs both on the GPU, in fp32.

What still differs (TRL's design, no setting matches it):
- RLOO: both put beta * sum_t log(pi/rho) in the return with a leave-one-out baseline; TRL's
  clipped-ratio loss is the plain policy gradient at one pass, as cogen's loss.
- GRPO: cogen keeps beta * KL in the return (every cogen algorithm has one optimum); TRL adds
  beta x the per-token k3 estimator to the loss. Both: loss_type "grpo", group-std scaling, clip 0.2.
- TRL's log-probabilities use the full softmax (BOS included) while it samples with BOS
  suppressed; cogen masks BOS out of both. The pre-trained model gives BOS ~1e-4.
- Random streams differ (sampling, prompt order): one run's rewards differ by noise.
- cogen loads GPT-2 with PyTorch's one-kernel tanh GELU in place of transformers' six-op gelu_new
  (the same function to 5e-7, `cogen.nets.lm.fused_gelu`); TRL loads the folder as saved. On the
  toy the swap saves about a twentieth of cogen's time (profiled: GELU 0.5 s -> 0.2-0.3 s of ~4.5 s).
The last line of stdout is the result as JSON; it is also written to --out.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import ROOT, compose_train, save_result  # also puts the checkout's src/ on the path

RESULT = ROOT / "outputs" / "bench" / "rl_vs_trl.json"
TRL_MISSING = "trl is a benchmark-only extra: pip install 'trl==1.16.0'"
TARGET = 2.0  # TRL time / cogen time


TASKS = {  # what each --task adds to cogen's composed config
    "toy": ["model=rl_lm"],
    "smollm2": ["experiment=sentiment_rl", "model/policy=smollm2_135m", "data=review_prompts_smollm2"],
}


def compose_cfg(algo: str, updates: int, seed: int, out_dir: str, task: str = "toy", device: str = "cpu"):
    return compose_train([*TASKS[task], f"model/algo={algo}", "logger=none", "callbacks=none",
                          "trainer.enable_progress_bar=false", "++trainer.enable_checkpointing=false",
                          "++trainer.limit_val_batches=0", "test=false", "trainer.max_epochs=1",
                          f"data.steps_per_epoch={updates}", f"seed={seed}", *(["trainer=gpu"] if device == "cuda" else [])],
                         out_dir)


def policy_folder(cfg, fresh: bool, tmp: Path) -> Path:
    """The save_pretrained folder both sides load: the pre-trained reference (made if missing), or a fresh GPT-2."""
    import torch
    from hydra.utils import instantiate

    if "smollm2" in cfg.model.policy._target_:
        instantiate(cfg.model.policy)   # writes the float32 cache on first use
        from cogen.nets.lm import smollm2_cache_dir

        return smollm2_cache_dir(cfg.model.policy.cache_dir)
    if fresh:
        torch.manual_seed(cfg.seed)
        instantiate(cfg.model.policy, path=None).save_pretrained(str(tmp / "fresh"))
        return tmp / "fresh"
    folder = Path(cfg.model.policy.path)
    folder = folder if folder.is_absolute() else ROOT / folder
    if not (folder / "config.json").exists():
        print(f"no pre-trained reference at {folder}: cogen-train model=lm_pretrain task=lm_pretrain (about 40 s)", flush=True)
        subprocess.run([sys.executable, "-m", "cogen.train", "model=lm_pretrain", "task=lm_pretrain"], cwd=ROOT, check=True)
    return folder


def run_cogen(cfg) -> tuple[float, object]:
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from cogen.app import build_trainer

    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as cogen.train.run does
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _convert_="all")
    trainer = build_trainer(cfg, [])
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - started
    assert trainer.global_step == cfg.data.steps_per_epoch, trainer.global_step
    return seconds, model.policy


def fast_tokenizer(tok):
    """MarkovTokenizer as a transformers tokenizer: the same words and ids, BOS (also pad and EOS) prepended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    bos = "<bos>"
    vocab = {**tok.index, bos: tok.bos_token_id}
    inner = Tokenizer(models.WordLevel(vocab, unk_token=bos))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    inner.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.bos_token_id)])
    return PreTrainedTokenizerFast(tokenizer_object=inner, bos_token=bos, eos_token=bos, pad_token=bos, unk_token=bos,
                                   padding_side="left")


def lexicon_reward(scores: dict):
    """The reward as TRL wants it: one float per completion text (cogen's `lexicon` rule)."""
    table = {w.lower(): float(s) for w, s in scores.items()}

    def vowels(completions, **_):
        return [sum(table.get(w, 0.0) for w in text.lower().split()) for text in completions]

    return vowels


def sentiment_reward(scale: float):
    """VADER's compound score of each completion text, as cogen's model/reward=sentiment gives it."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()

    def sentiment(completions, **_):
        return [scale * analyzer.polarity_scores(text)["compound"] for text in completions]

    return sentiment


def trl_task(cfg, tok):
    """TRL's view of the task: (prompt texts, reward function, tokenizer)."""
    if cfg.model.reward._target_.endswith("SentimentReward"):
        prompts = [tok.bos_token + t for t in instantiate_prompts(cfg)]   # cogen puts BOS before each prompt
        tok.padding_side = "left"
        return prompts, sentiment_reward(cfg.model.reward.scale), tok
    return list(cfg.data.prompts), lexicon_reward(cfg.model.reward.scores), fast_tokenizer(tok)


def instantiate_prompts(cfg) -> list[str]:
    from hydra.utils import instantiate

    return list(instantiate(cfg.data).texts)


def run_trl(cfg, folder: Path, algo: str, updates: int, out_dir: str, device: str = "cpu") -> tuple[float, object]:
    import torch
    import trl
    from datasets import Dataset
    from hydra.utils import instantiate
    from transformers import AutoModelForCausalLM, PrinterCallback

    m, prompts, tok = cfg.model, cfg.data.batch_size, instantiate(cfg.data.tokenizer)
    texts, reward_func, processing_class = trl_task(cfg, tok)
    common = dict(output_dir=out_dir, seed=cfg.seed, use_cpu=device == "cpu", bf16=False, fp16=False, gradient_checkpointing=False,
                  disable_dropout=True, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
                  max_steps=updates, per_device_train_batch_size=prompts * m.samples_per_prompt,
                  gradient_accumulation_steps=1, num_generations=m.samples_per_prompt, num_iterations=1,
                  max_completion_length=m.response_length, temperature=m.temperature, top_k=0, top_p=1.0,
                  learning_rate=m.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                  adam_beta1=m.betas[0], adam_beta2=m.betas[1], max_grad_norm=m.max_grad_norm, beta=m.kl.beta,
                  generation_kwargs={"suppress_tokens": list(getattr(tok, "never_sample", []))})  # never sampled
    if algo == "rloo":
        Config, Trainer, extra = trl.RLOOConfig, trl.RLOOTrainer, {}
    else:
        Config, Trainer = trl.GRPOConfig, trl.GRPOTrainer
        extra = dict(loss_type="grpo", scale_rewards="group" if m.algo.scale_rewards else "none", epsilon=m.algo.clip)
    dataset = Dataset.from_dict({"prompt": [texts[i % len(texts)] for i in range(prompts * updates)]})  # one epoch
    trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32),
                      args=Config(**common, **extra), reward_funcs=reward_func, train_dataset=dataset,
                      processing_class=processing_class)
    trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    assert trainer.state.global_step == updates, trainer.state.global_step
    return seconds, trainer.model


def mean_reward(policy, cfg, n: int, seed: int) -> tuple[float, float]:
    """Mean and standard error of the reward of about n responses, n / (number of prompts) to each
    of the task's prompts, sampled with cogen's sampler and scored by cogen's reward."""
    import torch
    from hydra.utils import instantiate

    from cogen.rl.rewards import Responses
    from cogen.rl.rollout import sample

    data, reward = instantiate(cfg.data), instantiate(cfg.model.reward)
    tok, device = data.tokenizer, next(policy.parameters()).device
    suppress = list(getattr(tok, "never_sample", []))
    stop = None if tok.eos_token_id in suppress else tok.eos_token_id
    k = max(1, n // len(data.ids))
    batch = data.collate(list(range(len(data.ids))))
    prompts, prompt_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    policy.eval()
    response, mask = sample(policy, prompts, prompt_mask, cfg.model.response_length, torch.Generator(device).manual_seed(seed),
                            cfg.model.temperature, suppress, stop, tok.pad_token_id, repeats=k)
    texts = [tok.decode([t for t, keep in zip(row, m) if keep]) for row, m in zip(response.tolist(), mask.tolist())]
    prompts, prompt_mask = prompts.repeat_interleave(k, 0), prompt_mask.repeat_interleave(k, 0)
    scores = reward(Responses(prompts, response, mask, prompts=[""] * len(texts), texts=texts, prompt_mask=prompt_mask)).double()
    if "scores" in cfg.model.reward:
        assert scores.tolist() == lexicon_reward(cfg.model.reward.scores)(texts), "TRL's reward disagrees with cogen's"
    return float(scores.mean()), float(scores.std() / len(scores) ** 0.5)


def quiet() -> None:
    import pytorch_lightning  # noqa: F401  (it sets its loggers' level on import)

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--updates", type=int, default=100, help="optimiser updates (rollouts) on each side (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--algo", choices=("rloo", "grpo"), default="rloo")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each side, alternated; the fastest counts (default 3)")
    p.add_argument("--fresh", action="store_true", help="start from an untrained GPT-2 (seeded) instead of the reference")
    p.add_argument("--task", choices=tuple(TASKS), default="toy",
                   help="toy: the Markov toy (default); smollm2: SmolLM2-135M on review prompts, VADER reward")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both sides run (default cpu)")
    p.add_argument("--eval-samples", type=int, default=1024, help="responses sampled to score each policy (default 1024)")
    p.add_argument("--out", default=str(RESULT), help=f"result JSON (default {RESULT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if min(args.updates, args.threads, args.repeats) < 1 or args.eval_samples < 2:
        p.error("--updates, --threads and --repeats must be >= 1, --eval-samples >= 2")
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit(TRL_MISSING)

    import torch
    from omegaconf import open_dict
    from transformers import AutoModelForCausalLM

    quiet()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cogen-bench-rl-") as tmp:
        cfg = compose_cfg(args.algo, args.updates, args.seed, tmp, args.task, args.device)
        folder = policy_folder(cfg, args.fresh, Path(tmp))
        if "path" in cfg.model.policy:
            with open_dict(cfg):
                cfg.model.policy.path = str(folder)
        eval_seed = cfg.model.eval_seed
        reference = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).to(args.device)
        ref = mean_reward(reference, cfg, args.eval_samples, eval_seed)
        del reference
        times: dict[str, list[float]] = {"cogen": [], "trl": []}
        for i in range(args.repeats):   # alternated: a burst of other load hits both sides; the minimum is the least disturbed
            seconds, cogen_policy = run_cogen(cfg)
            times["cogen"].append(seconds)
            seconds, trl_policy = run_trl(cfg, folder, args.algo, args.updates, str(Path(tmp) / f"trl{i}"), args.device)
            times["trl"].append(seconds)
        cogen_s, trl_s = min(times["cogen"]), min(times["trl"])
        rewards = {"cogen": mean_reward(cogen_policy, cfg, args.eval_samples, eval_seed),
                   "trl": mean_reward(trl_policy, cfg, args.eval_samples, eval_seed)}
    diff = rewards["cogen"][0] - rewards["trl"][0]
    diff_se = (rewards["cogen"][1] ** 2 + rewards["trl"][1] ** 2) ** 0.5
    result = {
        "benchmark": "rl_vs_trl", "task": args.task, "device": args.device, "algo": args.algo, "updates": args.updates, "seed": args.seed, "fresh": args.fresh,
        "responses_per_update": int(cfg.data.batch_size * cfg.model.samples_per_prompt),
        "response_length": int(cfg.model.response_length), "beta": float(cfg.model.kl.beta), "lr": float(cfg.model.lr),
        "cogen_s": round(cogen_s, 3), "trl_s": round(trl_s, 3), "ratio": round(trl_s / cogen_s, 3),
        "cogen_runs_s": [round(t, 3) for t in times["cogen"]], "trl_runs_s": [round(t, 3) for t in times["trl"]],
        "cogen_reward": round(rewards["cogen"][0], 4), "cogen_reward_se": round(rewards["cogen"][1], 4),
        "trl_reward": round(rewards["trl"][0], 4), "trl_reward_se": round(rewards["trl"][1], 4),
        "reference_reward": round(ref[0], 4), "reference_reward_se": round(ref[1], 4),
        "reward_diff": round(diff, 4), "reward_diff_se": round(diff_se, 4), "eval_samples": args.eval_samples,
        "target_ratio": TARGET,
        "meets_target": trl_s / cogen_s >= TARGET and diff >= -2 * diff_se,  # at least as fast x2, reward not lower
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__, "transformers": sys.modules["transformers"].__version__, "trl": trl.__version__,
    }
    report(result)
    return save_result(result, args.out)


def report(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    task = {"toy": "the Markov toy", "smollm2": "review prompts, SmolLM2-135M"}[r["task"]]
    table = Table(title=f"RL on {task} ({r['device']}): cogen vs TRL {r['trl']} ({r['algo']}, {r['updates']} updates x "
                        f"{r['responses_per_update']} responses of {r['response_length']} tokens, beta {r['beta']}, "
                        f"{r['threads']} thread(s))")
    for col in ("side", "wall time (s)", "updates", "final mean reward", "TRL time / this"):
        table.add_column(col, justify="left" if col == "side" else "right")
    for side, label in (("cogen", "cogen RLLM + Trainer"), ("trl", f"TRL {r['algo'].upper()}Trainer")):
        runs = ", ".join(f"{t:.2f}" for t in r[side + "_runs_s"])
        table.add_row(label, f"{r[side + '_s']:.2f} (of {runs})", str(r["updates"]), f"{r[side + '_reward']:.3f} ± {r[side + '_reward_se']:.3f}",
                      f"{r['ratio'] if side == 'cogen' else 1.0:.2f}x")
    table.add_row("reference (before RL)", "", "0", f"{r['reference_reward']:.3f} ± {r['reference_reward_se']:.3f}", "")
    console = Console(file=sys.stdout, soft_wrap=True)
    console.print(table)
    verdict = "[green]meets[/]" if r["meets_target"] else "[red]misses[/]"
    console.print(f"TRL / cogen wall time {r['ratio']:.2f}x {verdict} the goal (>= {r['target_ratio']:.0f}x with a reward "
                  f"no lower: cogen - TRL = {r['reward_diff']:+.3f} ± {r['reward_diff_se']:.3f}); "
                  f"load average {r['loadavg_before'][0]} before, {r['loadavg_after'][0]} after")
    if r["loadavg_before"][0] > 0.5 * r["cpu_count"]:  # other work on the cores: threads wait on each other
        console.print("[yellow]warning:[/] the machine was busy before the run; the wall times are not reliable")


if __name__ == "__main__":
    main()
