"""The domain classifier behind FID/KID and prompt adherence: its accuracy, its artifact, and
a sanity check of the distances it induces. It is stored under the repo's artifacts/, where the
CLI runs of other tests find it, so it trains once per fresh clone."""
from __future__ import annotations

import pytest
import torch

from cogen.config import CogenError
from cogen.metrics.domain import DomainFID, DomainKID, accuracy, domain_classifier

from conftest import ROOT, compose_train

ARTIFACTS = str(ROOT / "artifacts")


def _data(name: str):
    return compose_train(f"data={name}", "model=vae").data


def _test_split(data):
    from hydra.utils import instantiate

    dm = instantiate(data, binarize=False)
    dm.setup()
    return dm.splits


def test_digits_classifier_reaches_098_and_is_reused():
    data = _data("digits")
    net = domain_classifier(data, ARTIFACTS)
    splits = _test_split(data)
    acc = accuracy(net, *splits["test"])   # measured here, not read from the card
    assert acc >= 0.98, acc
    assert net.card["test_acc"] == pytest.approx(acc)
    assert net.card["version"] == "v1" and len(net.card["sha256"]) == 64
    path = net.card["path"]
    assert path.endswith(".pt") and "digits-v1-" in path
    assert domain_classifier(data, ARTIFACTS) is net   # loaded once per process


@pytest.mark.slow
def test_fashion_mnist_classifier_reaches_088():
    data = _data("fashion_mnist")
    net = domain_classifier(data, ARTIFACTS)
    acc = accuracy(net, *_test_split(data)["test"])
    assert acc >= 0.88, acc


def test_fid_and_kid_of_real_vs_real_are_far_below_real_vs_noise():
    data = _data("digits")
    net = domain_classifier(data, ARTIFACTS)
    splits = _test_split(data)
    real_a, real_b = splits["train"][0][:600], splits["train"][0][600:1200]
    noise = torch.rand(real_b.shape, generator=torch.Generator().manual_seed(0))
    scores = {}
    for name, other in (("real", real_b), ("noise", noise)):
        fid, kid = DomainFID(net), DomainKID(net, subset_size=200, subsets=20)
        for metric in (fid, kid):
            metric.update(real_a, real=True)
            metric.update(other, real=False)
        scores[name] = (fid.compute().item(), kid.compute()[0].item())
    (fid_real, kid_real), (fid_noise, kid_noise) = scores["real"], scores["noise"]
    assert fid_real < 0.05 * fid_noise, scores
    assert kid_real < 0.05 * kid_noise, scores


def test_unknown_version_is_a_short_error():
    with pytest.raises(CogenError, match="version='v0'"):
        domain_classifier(_data("digits"), ARTIFACTS, version="v0")


def test_data_without_labels_is_a_short_error(tmp_path):
    with pytest.raises(CogenError, match="needs labelled images"):
        domain_classifier(compose_train("data=ring8").data, str(tmp_path))
