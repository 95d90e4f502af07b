"""The vectorised ensemble against real lone runs (`cogen.train.run` on a composed config, as
`python -m cogen.train` runs it): same weights, same test metrics, same summary.json shape."""
from __future__ import annotations

import json

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from cogen.ensemble import GANEnsemble, build_member, main
from cogen.train import run
from conftest import compose_train, same_metric, summary

pytestmark = pytest.mark.slow

# Two epochs of 15 iterations; validation after each picks the tested checkpoint (best val/reverse_kl).
# save_top_k=-1 keeps last.ckpt = the final weights (Lightning writes `last` only with a top-k save).
# std=0.3 and lr=1e-3 make the metrics informative this early (partial high quality, several modes).
COMMON = ["logger=csv", "callbacks.sample_plot=null", "callbacks.model_checkpoint.save_top_k=-1",
          "trainer.enable_progress_bar=false", "data.num_samples=3000", "trainer.max_epochs=2",
          "trainer.limit_train_batches=15", "data.mixture.std=0.3", "model.lr=1e-3"]
# Two seeds with m=1, one m=2 (noise drawn in bulk), one m=3 (drawn per step), ring and grid in one ensemble.
MEMBERS = [("ring8", "gan", 0), ("ring8", "gan", 1), ("grid25", "pacgan2", 0), ("ring8", "pacgan3", 2)]
KEYS = ("test/modes", "test/hq_pct", "test/reverse_kl", "val/modes", "val/hq_pct", "val/reverse_kl")


def overrides(data, model, seed):
    return [f"data={data}", f"model={model}", f"seed={seed}", *COMMON]


def lone_run(out, data, model, seed):
    """What `python -m cogen.train <overrides> hydra.run.dir=<out>` does, in this process."""
    full = compose_train(*overrides(data, model, seed))
    with open_dict(full):
        full.hydra.runtime.output_dir = str(out)
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(full)
    try:
        run(OmegaConf.masked_copy(full, [k for k in full if k != "hydra"]))
    finally:
        HydraConfig.instance().cfg = previous
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    return summary(out), state


@pytest.fixture
def one_thread():
    """Two intra-op threads on a shared 2-core machine can make each step 30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ensemble_matches_lone_runs(tmp_path, one_thread):
    members = [build_member(overrides(*spec), tmp_path / "ens" / "-".join(map(str, spec))) for spec in MEMBERS]
    ens = GANEnsemble(members, "cpu", chunk=5)
    assert [p for p, _ in ens.groups] == [1, 2, 3]  # m = 1, 2, 3 in one ensemble
    ens.fit(30)
    ens.write_runs(wall_s=0.0, fit_s=0.0)
    fractional = []
    for spec, m in zip(MEMBERS, members):
        lone, lone_state = lone_run(tmp_path / "lone" / "-".join(map(str, spec)), *spec)
        state = m.model.state_dict()
        assert state.keys() == lone_state.keys()
        for k, v in lone_state.items():
            torch.testing.assert_close(state[k], v, atol=1e-5, rtol=0, msg=f"{spec} {k}")
        ours = summary(m.out)
        assert ours["status"] == lone["status"] == "completed"
        for k in KEYS:
            assert same_metric(ours["metrics"][k], lone["metrics"][k], rel=1e-6), (spec, k, ours["metrics"][k])
        fractional.append(0 < ours["metrics"]["test/hq_pct"] < 100)
        assert ours["choices"] == lone["choices"] and ours["seed"] == lone["seed"]
        assert {"status", "task", "seed", "protocol", "choices", "metrics", "wall_s", "global_step"} <= ours.keys()
        assert ours["global_step"] == lone["global_step"]
        # The same checkpoint was tested: Lightning names it by optimizer steps, two per iteration.
        assert lone["tested_ckpt"].endswith(f"-step{2 * ours['tested_iteration']}.ckpt")
    assert any(fractional)  # the metrics compared are not all trivial
    # The batched eval forward is the member's own GAN.generate, bit for bit.
    with torch.no_grad():
        samples = torch.cat(ens.gen(ens.eval_noise["test"], False))
    for e, m in enumerate(ens.members):
        assert torch.equal(samples[e], m.model.generate(m.model.test_noise))


def test_cli_writes_one_run_per_member(tmp_path, one_thread):
    main(["data=ring8", "methods=[gan,pacgan2]", "seeds=2", "iterations=6", "device=cpu", f"out={tmp_path}",
          "chunk=3", "data.num_samples=600", "callbacks=none", "logger=csv"])
    runs = sorted(tmp_path.glob("ring8/*/seed*/summary.json"))
    assert len(runs) == 4
    for path in runs:
        s = json.loads(path.read_text())
        assert s["status"] == "completed" and s["global_step"] == 12 and s["runner"] == "ensemble"
        assert s["choices"]["model"] == path.parts[-3] and s["tested_ckpt"].endswith("last.ckpt")
