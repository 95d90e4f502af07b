"""The domain classifier: image features for FID/KID and the judge of prompt adherence.

Inception weights cannot be downloaded here, and Inception features say little about 8x8 or
28x28 grey images anyway. As is usual for MNIST-like data ("domain FID"), cogen trains a small
CNN on the same data set's training split, once, with a fixed recipe and seed, and stores it as
a versioned artifact: `<artifacts_dir>/domain_classifier/<data>-<version>-<key>.pt`, where the
key hashes everything that shapes it (data set, split, recipe). Every run that uses it finds it
there, records its card (version, key, accuracies, SHA-256) in summary.json, and scores with the
very same weights. It trains on grey images and their Bernoulli binarisations alike, so that it
judges grey samples (GANs) and binarised-data models (VAEs) on equal terms.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from cogen.config import CogenError

VERSION = "v1"
RECIPE = {"width": 32, "num_features": 128, "lr": 2e-3, "schedule": "cosine", "batch_size": 128,
          "binarize_share": 0.25, "seed": 0, "epochs": {"small": 60, "large": 5}}  # small: < 10,000 images
SPLIT_KEYS = ("_target_", "name", "shape", "num_classes", "val_size", "test_size", "split_seed")
_LOADED: dict[Path, "DomainClassifier"] = {}


class DomainClassifier(nn.Module):
    """Two 3x3 conv layers (with 2x2 max-pooling), a `num_features` penultimate layer, and
    class logits. `features(x)` is what FID/KID compare; `forward(x)` gives the logits."""

    def __init__(self, shape: list[int], num_classes: int = 10, width: int = 32, num_features: int = 128):
        super().__init__()
        channels, height, _ = shape
        pools = 2 if height >= 16 else 1
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        if pools == 2:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.body(torch.zeros(1, *shape)).shape[1]
        self.embed = nn.Sequential(nn.Linear(flat, num_features), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(num_features, num_classes))
        self.num_features = num_features
        self.card: dict[str, Any] = {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x.float()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _key(data: DictConfig) -> tuple[str, dict]:
    split = {k: OmegaConf.to_container(data[k]) if OmegaConf.is_config(data.get(k)) else data.get(k) for k in SPLIT_KEYS}
    identity = {"version": VERSION, "data": split, "recipe": RECIPE}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10], identity


def _grey_splits(data: DictConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The data set's own train/val/test split, with grey (not binarised) images."""
    dm = instantiate(data, binarize=False, num_samples=None, seed=0)
    if not hasattr(dm, "splits"):
        raise CogenError(f"data={data.get('_target_')}: the domain classifier needs labelled images "
                         f"(data=digits, fashion_mnist or mnist).")
    dm.setup()
    return dm.splits


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    correct = sum((net(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum().item()
                  for i in range(0, len(images), batch))
    return correct / len(images)


def train_classifier(splits: dict, shape: list[int], num_classes: int) -> tuple[DomainClassifier, dict]:
    """The fixed recipe (Adam, `RECIPE`), deterministic on CPU; returns the net and its accuracies.
    It runs under a forked RNG: a run that trains it draws the same numbers as one that loads it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RECIPE["seed"])
        return _train(splits, shape, num_classes)


def _train(splits: dict, shape: list[int], num_classes: int) -> tuple[DomainClassifier, dict]:
    g = torch.Generator().manual_seed(RECIPE["seed"])
    net = DomainClassifier(shape, num_classes, RECIPE["width"], RECIPE["num_features"])
    opt = torch.optim.Adam(net.parameters(), lr=RECIPE["lr"])
    x, y = splits["train"]
    epochs = RECIPE["epochs"]["small" if len(x) < 10_000 else "large"]
    steps = epochs * -(-len(x) // RECIPE["batch_size"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    started = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=g).split(RECIPE["batch_size"]):
            images = x[idx]
            binarize = torch.rand(len(idx), 1, 1, 1, generator=g) < RECIPE["binarize_share"]
            images = torch.where(binarize, torch.bernoulli(images, generator=g), images)
            loss = F.cross_entropy(net(images), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    net.eval()
    test_x, test_y = splits["test"]
    binary_test = torch.bernoulli(test_x, generator=torch.Generator().manual_seed(1))
    scores = {"val_acc": accuracy(net, *splits["val"]), "test_acc": accuracy(net, test_x, test_y),
              "test_acc_binarized": accuracy(net, binary_test, test_y), "epochs": epochs,
              "train_images": len(x), "train_s": round(time.perf_counter() - started, 1)}
    return net, scores


def domain_classifier(data: DictConfig, artifacts_dir: str = "artifacts", version: str = VERSION) -> DomainClassifier:
    """The frozen classifier for `data`: loaded from its artifact, trained and stored first if absent."""
    data = OmegaConf.create(data) if isinstance(data, dict) else data
    if version != VERSION:
        raise CogenError(f"domain classifier version={version!r}: this cogen builds {VERSION!r} only. "
                         f"Drop the override or check out the cogen release that made {version}.")
    if data.get("shape") is None:
        raise CogenError(f"data={data.get('_target_')}: the domain classifier needs labelled images "
                         f"(data=digits, fashion_mnist or mnist).")
    key, identity = _key(data)
    target = str(data.get("_target_", "images")).rsplit(".", 1)[-1].removesuffix("DataModule")
    name = str(data.get("name") or target).lower().replace(" ", "_").replace("-", "_")
    path = Path(artifacts_dir).expanduser().resolve() / "domain_classifier" / f"{name}-{VERSION}-{key}.pt"
    if path in _LOADED:
        return _LOADED[path]
    shape, num_classes = list(data.shape), int(data.get("num_classes") or 10)
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):  # parallel jobs of a multirun train it once
        if not path.exists():
            net, scores = train_classifier(_grey_splits(data), shape, num_classes)
            card = {"name": "domain_classifier", "version": VERSION, "key": key, "data": name, **scores,
                    "identity": identity}
            tmp = path.with_suffix(".tmp")
            torch.save({"state_dict": net.state_dict(), "card": card, "shape": shape, "num_classes": num_classes}, tmp)
            os.replace(tmp, path)
            path.with_suffix(".json").write_text(json.dumps(card, indent=2))
    stored = torch.load(path, map_location="cpu", weights_only=True)
    net = DomainClassifier(stored["shape"], stored["num_classes"], RECIPE["width"], RECIPE["num_features"])
    net.load_state_dict(stored["state_dict"])
    net.card = {**stored["card"], "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    net.card.pop("identity", None)
    net.eval().requires_grad_(False)
    _LOADED[path] = net
    return net


def cards(*objects: Any) -> list[dict]:
    """The cards of every domain classifier inside these modules or objects (a model, callbacks),
    so that summary.json says which feature network scored the run."""
    found: dict[str, dict] = {}
    for obj in objects:
        roots = [obj] if isinstance(obj, nn.Module) else [v for v in vars(obj).values() if isinstance(v, nn.Module)]
        for root in roots:
            for sub in root.modules():
                net = sub.classifier if isinstance(sub, _Features) else sub
                if isinstance(net, DomainClassifier) and net.card:
                    found[net.card["sha256"]] = net.card
    return list(found.values())


class _Features(nn.Module):
    """The classifier's penultimate layer, as the `feature` module torchmetrics expects. The
    classifier is held, not registered: it stays out of every checkpoint (it is the artifact's)
    and out of the model's train/eval switching, yet moves with the metric to its device."""

    def __init__(self, classifier: DomainClassifier):
        super().__init__()
        self.__dict__["classifier"] = classifier
        self.num_features = classifier.num_features

    def _apply(self, fn, recurse: bool = True):
        self.classifier._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


class DomainFID(FrechetInceptionDistance):
    """Fréchet distance between real and generated images in the domain classifier's features.
    `update(images, real)` takes float images in [0, 1], shape (B, C, H, W)."""

    def __init__(self, classifier: DomainClassifier, **kwargs):
        super().__init__(feature=_Features(classifier), reset_real_features=True, **kwargs)
        self.card = classifier.card


class DomainKID(KernelInceptionDistance):
    """Kernel (MMD) distance in the same features; `compute()` gives (mean, std) over subsets,
    drawn from `seed` so that a checkpoint scores the same every time."""

    def __init__(self, classifier: DomainClassifier, subset_size: int = 100, subsets: int = 50, seed: int = 0,
                 **kwargs):
        super().__init__(feature=_Features(classifier), subset_size=subset_size, subsets=subsets,
                         reset_real_features=True, **kwargs)
        self.card, self.seed = classifier.card, seed

    def compute(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return super().compute()
