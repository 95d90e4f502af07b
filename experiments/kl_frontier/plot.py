"""Every run of the kl_frontier experiment on the exact frontier: one panel per beta, the exact
curve, the optimum pi_beta, and each algorithm's final policy (one marker per seed).

    python experiments/kl_frontier/plot.py outputs/kl_frontier/short   # writes frontier_all.png there
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MARKERS = {"reinforce": "o", "rloo": "s", "grpo": "^", "ppo": "D"}


def load(root: Path) -> dict[float, list[tuple[str, dict]]]:
    """{beta: [(algo, frontier report of the run's first prompt)]} from every run's samples/frontier.json."""
    by_beta: dict[float, list] = {}
    for path in sorted(root.rglob("samples/frontier.json")):
        summary = json.loads((path.parents[1] / "summary.json").read_text())
        report = json.loads(path.read_text())[0]
        by_beta.setdefault(report["beta"], []).append((summary["choices"].get("model/algo", "?"), report))
    return by_beta


def main(root: Path) -> Path:
    by_beta = load(root)
    if not by_beta:
        sys.exit(f"no samples/frontier.json under {root}: run `cogen-table experiment=kl_frontier` first")
    fig, axes = plt.subplots(1, len(by_beta), figsize=(3.6 * len(by_beta), 3.4), squeeze=False)
    for ax, (beta, runs) in zip(axes[0], sorted(by_beta.items())):
        curve = runs[0][1]["curve"]
        ax.plot([p["kl"] for p in curve], [p["reward"] for p in curve], "k-", lw=1, label="exact frontier")
        ax.plot(runs[0][1]["optimum"]["kl"], runs[0][1]["optimum"]["reward"], "o", mfc="none", mec="k", ms=12,
                label="optimum")
        seen = set()
        for algo, report in runs:
            ax.plot(report["policy"]["kl"], report["policy"]["reward"], MARKERS.get(algo, "x"), ms=5, alpha=0.8,
                    color=f"C{list(MARKERS).index(algo) if algo in MARKERS else 4}",
                    label=None if algo in seen else algo)
            seen.add(algo)
        opt = runs[0][1]["optimum"]
        ax.set_xlim(max(0, opt["kl"] - 1.0), opt["kl"] + 1.0)
        ax.set_ylim(opt["reward"] - 0.5, opt["reward"] + 0.5)
        ax.set_title(f"beta = {beta:g}")
        ax.set_xlabel("KL(policy || reference), nats")
    axes[0][0].set_ylabel("expected reward")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out = root / "frontier_all.png"
    fig.savefig(out, dpi=110)
    print(out)
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/kl_frontier/short"))
