"""The feedback store: every question a mode asks its partner, and the answer, in one SQLite file.

Why SQLite: one file in the run dir, readable by any tool, and durable. The store runs in WAL mode
and commits each answer in its own transaction, so killing the process (even with SIGKILL) loses
no answer that `record` returned for. A run with a real person can therefore be replayed exactly
(`cogen.collab.replay.ReplayPartner`) and exported (`to_csv`, `to_wandb_table`).

Answers are stored as JSON. Tensors (class labels, ratings, edit masks and pixels) are encoded
exactly: dtype, shape and the raw bytes in base64, so a replayed answer is bit for bit the one given.
"""
from __future__ import annotations

import base64
import csv
import json
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cogen.config import CogenError

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    session      TEXT NOT NULL,
    question     TEXT NOT NULL,
    partner_kind TEXT NOT NULL,
    partner_id   TEXT NOT NULL,
    shown        TEXT NOT NULL,
    artifact     TEXT,
    answer       TEXT NOT NULL,
    asked_at     REAL NOT NULL,
    answered_at  REAL NOT NULL
)"""

COLUMNS = ("seq", "session", "question", "partner_kind", "partner_id", "shown", "artifact", "answer",
           "asked_at", "answered_at")


def encode(value: Any) -> Any:
    """A JSON-able form of an answer that `decode` turns back into an equal value, tensors bit for bit."""
    if isinstance(value, torch.Tensor):   # the raw bytes: every dtype, bfloat16 too (numpy has none)
        tensor = value.detach().cpu().contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        return {"__tensor__": base64.b64encode(raw).decode("ascii"),
                "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}
    if is_dataclass(value) and not isinstance(value, type):
        return {"__dataclass__": f"{type(value).__module__}.{type(value).__qualname__}",
                "fields": {f.name: encode(getattr(value, f.name)) for f in fields(value)}}
    if isinstance(value, tuple):   # e.g. a (head, relation, tail) fact: read back as a tuple, not a list
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CogenError(f"the feedback store cannot save an answer of type {type(value).__name__}: "
                     "answers must be tensors, dataclasses, lists, dicts, numbers or strings.")


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            dtype, raw = getattr(torch, value["dtype"]), base64.b64decode(value["__tensor__"])
            if not raw:   # an empty tensor
                return torch.empty(value["shape"], dtype=dtype)
            return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy()).view(dtype).reshape(value["shape"])
        if "__tuple__" in value:
            return tuple(decode(v) for v in value["__tuple__"])
        if "__dataclass__" in value:
            from hydra.utils import get_class

            return get_class(value["__dataclass__"])(**{k: decode(v) for k, v in value["fields"].items()})
        return {k: decode(v) for k, v in value.items()}
    return value


def summarise(value: Any) -> str:
    """A short human-readable form of an answer, for CSV and W&B tables (the store keeps it exactly)."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 32:
            return json.dumps(value.tolist())
        return f"tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if is_dataclass(value) and not isinstance(value, type):
        return f"{type(value).__name__}(" + ", ".join(f"{k}={summarise(v)}" for k, v in asdict(value).items()) + ")"
    if value is None or isinstance(value, (bool, int, float, str)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        text = ", ".join(summarise(v) for v in value)
        return ("[" if isinstance(value, list) else "(") + text[:200] + ("]" if isinstance(value, list) else ")")
    return json.dumps(encode(value))[:200]


@dataclass
class Record:
    """One stored question and its answer (decoded)."""

    seq: int
    session: str
    question: str
    partner_kind: str
    partner_id: str
    shown: dict
    artifact: str | None
    answer: Any
    asked_at: float
    answered_at: float


class FeedbackStore:
    """path: the SQLite file (created with its folder). session: names this run's answers; a store
    may hold several sessions (e.g. a run and its resumption), each read back in order."""

    def __init__(self, path: str | Path, session: str | None = None, read_only: bool = False):
        self.path = Path(path)
        self.session = session or uuid.uuid4().hex[:12]
        if read_only:   # replay and export never write, so a store copied from elsewhere may be read-only
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0,
                                      isolation_level=None, check_same_thread=False)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")   # a committed answer is on disk, not only in the OS cache
        self.db.execute(SCHEMA)

    @classmethod
    def open_existing(cls, path: str | Path) -> "FeedbackStore":
        """A store that must already exist (replay, export): a clear error names the missing file."""
        if not Path(path).is_file():
            raise CogenError(f"no feedback store at {path}: give the feedback.sqlite of an earlier run "
                             "(it sits in that run's output dir).")
        store = cls(path, session="read", read_only=True)
        try:
            store.db.execute("SELECT seq FROM answers LIMIT 1")
        except sqlite3.DatabaseError as e:
            store.close()
            raise CogenError(f"{path} is not a cogen feedback store ({e}): give the feedback.sqlite of an earlier run.")
        return store

    def record(self, question: str, partner_kind: str, partner_id: str, shown: dict, answer: Any,
               artifact: str | None = None, asked_at: float | None = None) -> int:
        """Store one answer in its own transaction; returns its sequence number once it is on disk."""
        now = time.time()
        with self.db:   # autocommit: the INSERT is its own transaction, committed (and synced) when it returns
            cursor = self.db.execute(
                "INSERT INTO answers (session, question, partner_kind, partner_id, shown, artifact, answer, "
                "asked_at, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.session, question, partner_kind, partner_id, json.dumps(encode(shown)), artifact,
                 json.dumps(encode(answer)), now if asked_at is None else asked_at, now))
        return int(cursor.lastrowid)

    def records(self, session: str | None = None) -> list[Record]:
        """The stored answers in the order given (of one session, or all)."""
        query, args = "SELECT * FROM answers", ()
        if session is not None:
            query, args = query + " WHERE session = ?", (session,)
        rows = self.db.execute(query + " ORDER BY seq", args).fetchall()
        return [Record(seq, sess, q, kind, pid, decode(json.loads(shown)), artifact, decode(json.loads(answer)),
                       asked, answered)
                for seq, sess, q, kind, pid, shown, artifact, answer, asked, answered in rows]

    def sessions(self) -> list[str]:
        """The sessions in the store, oldest first."""
        rows = self.db.execute("SELECT session FROM answers GROUP BY session ORDER BY MIN(seq)").fetchall()
        return [r[0] for r in rows]

    def _rows(self) -> list[list]:
        return [[r.seq, r.session, r.question, r.partner_kind, r.partner_id, json.dumps(encode(r.shown)),
                 r.artifact or "", summarise(r.answer), r.asked_at, r.answered_at] for r in self.records()]

    def to_csv(self, path: str | Path) -> Path:
        """Every answer as one CSV row (tensor answers summarised; the store keeps them exactly)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows(self._rows())
        return path

    def to_wandb_table(self):
        """The same rows as a `wandb.Table`, to log beside the run's metrics."""
        import wandb

        return wandb.Table(columns=list(COLUMNS), data=self._rows())

    def close(self) -> None:
        self.db.close()
