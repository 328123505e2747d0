"""The training configuration: one flat, typed record (model and optimisation settings together)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Literal

from ..errors import UserError
from ..nn import FUSIONS, ITEM_REPRS, MMSR, READOUTS, MMSRConfig, Recommender, SASRec, SASRecConfig
from .metrics import KS, METRICS


@dataclass(frozen=True)
class ModelEntry:
    """A model `train` can build: its class, its settings (their defaults are the model's defaults) and how it
    trains by default."""

    model: type[Recommender]
    settings: type
    training: dict


MODELS = {
    "mmsr": ModelEntry(MMSR, MMSRConfig, {"train_on": "positions", "batch_size": 256}),
    # SASRec trains as the eSASRec benchmark trains RecTools' SASRec
    "sasrec": ModelEntry(SASRec, SASRecConfig, {"train_on": "sequences", "batch_size": 128}),
}
# the settings a model or its training defaults declare: left None in TrainConfig, they take the chosen model's
MODEL_SETTINGS = {
    name
    for entry in MODELS.values()
    for name in (*(f.name for f in dataclasses.fields(entry.settings)), *entry.training)
}


@dataclass
class TrainConfig:
    model: Literal[tuple(MODELS)] = "mmsr"
    dim: int = 64
    # None (here and below): the chosen model's default, declared once in its settings class (MMSRConfig,
    # SASRecConfig) or its registry entry's training defaults
    n_layers: int | None = None
    n_heads: int | None = None  # SASRec only
    fusion: Literal[FUSIONS] = "async"  # MMSR only; none: no code nodes (content only through item_repr)
    dropout: float | None = None
    attn_dropout: float | None = None
    readout: Literal[READOUTS] | None = None  # the paper: last
    item_repr: Literal[ITEM_REPRS] | None = None  # the paper: id
    temperature: float | None = None  # scores: 0 = dot product (the paper's); > 0 = cosine similarity / this
    modalities: list[str] | None = None  # None: every modality of the dataset
    missing_modality: str | None = None  # simulate missing data: this modality is dropped ...
    missing_rate: float = 0.0  # ... for this share of the items, in training and evaluation alike
    # 0: full cross-entropy over all items (for SASRec it beat 256 sampled negatives on Toys validation, BENCHMARKS.md);
    # > 0: sampled softmax with this many negatives
    n_negatives: int = 0
    # a sample per target position (MMSR), or (SASRec only, its default) each user's training sequence once per
    # epoch with every position a target
    train_on: Literal["positions", "sequences"] | None = None
    epochs: int = 200  # at most; validation decides when to stop (patience)
    batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10  # epochs without validation improvement before stopping
    valid_metric: str = "ndcg@10"
    eval_batch_size: int = 1024
    # evaluation: drop the user's history items (never the target) from the ranking; None: drop them unless some
    # user of the dataset repeats an item (where nobody does, a seen item can never be the answer)
    exclude_seen: bool | None = None
    seed: int = 2023
    # intra-op threads; 0: all cores, or 1 when measured steps run faster on 1 (another process busy), re-checked
    threads: int = 0
    device: str = "cpu"
    num_workers: int = 0  # data-loader worker processes building graphs

    def __post_init__(self) -> None:
        entry = MODELS.get(self.model, MODELS["mmsr"])  # an unknown model is refused by the type check
        defaults = {**vars(entry.settings()), **entry.training}
        for name in MODEL_SETTINGS:
            if getattr(self, name) is None:
                setattr(self, name, defaults.get(name, 1))  # 1 for what the model does not read (MMSR: heads)

    def validate(self) -> None:
        names = {f"{m}@{k}" for m in METRICS for k in KS}
        if self.valid_metric not in names:
            raise UserError(f"setting 'valid_metric': {self.valid_metric!r} is not one of {', '.join(sorted(names))}")
        cores = os.cpu_count() or 1
        if not 0 <= self.threads <= cores:
            raise UserError(
                f"setting 'threads': must be 0 (chosen by measurement) or a thread count up to the "
                f"{cores} cores of this machine"
            )
        if self.num_workers > cores:
            raise UserError(f"setting 'num_workers': at most one worker process per core ({cores} here)")
        for name in ("dim", "n_layers", "n_heads", "epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"setting '{name}': must be at least 1")
        for name in ("dropout", "attn_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"setting '{name}': must be in [0, 1)")
        if self.model == "sasrec" and self.dim % self.n_heads:
            raise UserError(f"settings 'dim' ({self.dim}) must be divisible by 'n_heads' ({self.n_heads})")
        if self.temperature < 0:
            raise UserError("setting 'temperature': must be 0 (dot product) or positive (cosine / temperature)")
        if self.train_on == "sequences" and self.model != "sasrec":
            raise UserError("setting 'train_on': 'sequences' needs model=sasrec (one output per position)")
        if self.n_negatives < 0:
            raise UserError("setting 'n_negatives': must be >= 0")
        if self.n_negatives and self.weight_decay:
            raise UserError(
                "settings 'n_negatives' and 'weight_decay': a sampled softmax updates the item embeddings "
                "with a lazy (sparse) Adam, which has no weight decay; set one of them to 0"
            )
        if self.modalities is not None and len(set(self.modalities)) < len(self.modalities):
            raise UserError(f"setting 'modalities': {self.modalities} names a modality more than once")
        if self.missing_rate and self.missing_modality is None:
            raise UserError("setting 'missing_rate': needs 'missing_modality' (which modality goes missing)")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"setting 'seed': must be in [0, 2**32), got {self.seed}")
        if not 0 < self.lr <= 1:
            raise UserError(f"setting 'lr': must be in (0, 1], got {self.lr}")
        if self.weight_decay < 0 or self.patience < 1 or self.num_workers < 0:
            raise UserError("settings 'weight_decay' >= 0, 'patience' >= 1, 'num_workers' >= 0 required")

    def model_settings(self):
        """The chosen model's settings (MMSRConfig, SASRecConfig, ...) as this configuration sets them."""
        settings = MODELS[self.model].settings
        return settings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(settings)})
