"""The batches a run trains and evaluates on, from the corpus its config names (through the ``data`` plane).

Both streams are global (opened as for one process, with the config's batch size) and each rank reads its
share of every batch (:class:`data.RankShare`), so the saved cursor means the same samples on any world size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import data
from data.rank_share import RankShare
from specs.train_config import TrainConfig

BUNDLED = {"tinyshakespeare": data.shakespeare_char}  # corpus names a config may use instead of a directory


@dataclass
class Streams:
    train: RankShare
    val: RankShare
    directory: Path  # the token-shard build
    name: str
    sha256: str  # of the build's manifest.json, which holds the sha256 of every shard

    @property
    def vocab_size(self) -> int:
        return self.train.shards.vocab_size

    @property
    def uri(self) -> str:
        return f"lmplanes:{self.name}" if self.name in BUNDLED else self.directory.resolve().as_uri()

    def save_tokenizer(self, folder: Path) -> None:
        """The corpus tokenizer beside a checkpoint's weights (``tokenizer.json``)."""
        self.train.shards.tokenizer().save(folder)


def open_streams(cfg: TrainConfig, *, rank: int, world_size: int) -> Streams:
    corpus = cfg.data.corpus
    directory = BUNDLED[corpus]() if corpus in BUNDLED else Path(corpus)
    kind = data.RandomWindows if cfg.data.sampling == "random" else data.PackedSequences
    train, val = (
        kind(
            data.TokenShards(directory, split),
            seq_len=cfg.data.seq_len,
            batch_size=cfg.data.batch_size,
            seed=cfg.seed + offset,  # the validation stream draws apart from the training stream
        )
        for split, offset in (("train", 0), ("val", 1))
    )
    digest = hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()
    return Streams(train=RankShare(train, rank=rank, world_size=world_size),
                   val=RankShare(val, rank=rank, world_size=world_size), directory=directory,
                   name=corpus if corpus in BUNDLED else directory.name,
                   sha256=digest)
