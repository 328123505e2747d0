"""The embedded default: a multimodal sequential dataset with planted structure, generated from a seed.

Items belong to latent groups; users move between groups along a sparse Markov chain and pick popular items of
the group they are in. Image and text features mix three parts whose weights are settings:
  - the item's group (the sequential signal: it predicts what comes next),
  - the item's style, shared by image and text but unrelated to the sequences (the cross-modal signal),
  - noise.
A model that reads the modality codes can therefore generalise across items of a group, while the style part
makes image and text agree with each other without helping the sequence task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .readers import ItemTable, RawData


@dataclass
class SyntheticSpec:
    """The embedded dataset's settings (`synthetic.NAME` of preprocessing)."""

    users: int = 3000
    items: int = 600
    groups: int = 24
    styles: int = 8
    mean_length: float = 12.0
    stay: float = 0.3  # probability of staying in the current group
    image_sequential: float = 1.0
    text_sequential: float = 0.6
    image_cross_modal: float = 0.8
    text_cross_modal: float = 0.8
    noise: float = 0.7
    missing_image: float = 0.03
    missing_text: float = 0.02
    image_dim: int = 64
    text_dim: int = 48
    seed: int = 7

    def validate(self) -> None:
        checks = {
            "users": 1 <= self.users <= 10**6,
            "items": 10**6 >= self.items >= self.groups >= 4,
            "groups": 4 <= self.groups,
            "styles": 1 <= self.styles <= 10**3,
            "mean_length": 5 <= self.mean_length <= 10**3,
            "stay": 0 <= self.stay <= 1,
            "noise": self.noise >= 0,
            "missing_image": 0 <= self.missing_image < 1,
            "missing_text": 0 <= self.missing_text < 1,
            "image_dim": 1 <= self.image_dim <= 4096,
            "text_dim": 1 <= self.text_dim <= 4096,
            "seed": 0 <= self.seed < 2**32,
        }
        for name, ok in checks.items():
            if not ok:
                raise UserError(f"setting 'synthetic.{name}': value {getattr(self, name)!r} is out of range")


def generate(spec: SyntheticSpec) -> RawData:
    rng = np.random.default_rng(spec.seed)
    group = rng.permutation(np.arange(spec.items) % spec.groups)
    style = rng.integers(spec.styles, size=spec.items)
    members = [np.flatnonzero(group == g) for g in range(spec.groups)]
    # Zipf popularity inside each group
    weights = [1.0 / np.arange(1, len(m) + 1) for m in members]
    weights = [w / w.sum() for w in weights]
    # each group leads to three others with decreasing probability
    successors = np.stack(
        [rng.choice(np.delete(np.arange(spec.groups), g), 3, replace=False) for g in range(spec.groups)]
    )
    move = np.array([0.6, 0.25, 0.15])

    histories = []
    for _ in range(spec.users):
        length = max(5, int(rng.poisson(spec.mean_length - 5)) + 5)
        g = rng.integers(spec.groups)
        seq = []
        for _ in range(length):
            seq.append(int(members[g][rng.choice(len(members[g]), p=weights[g])]) + 1)
            g = g if rng.random() < spec.stay else successors[g][rng.choice(3, p=move)]
        histories.append([str(i) for i in seq])

    def modality(dim: int, sequential: float, cross_modal: float, missing: float) -> tuple[np.ndarray, np.ndarray]:
        group_vec = rng.normal(size=(spec.groups, dim))
        style_vec = rng.normal(size=(spec.styles, dim))
        x = sequential * group_vec[group] + cross_modal * style_vec[style]
        x = x + spec.noise * rng.normal(size=(spec.items, dim))
        has = rng.random(spec.items) >= missing
        x[~has] = 0.0
        return x.astype(np.float32), has

    image, has_image = modality(spec.image_dim, spec.image_sequential, spec.image_cross_modal, spec.missing_image)
    text, has_text = modality(spec.text_dim, spec.text_sequential, spec.text_cross_modal, spec.missing_text)
    ids = [str(i) for i in range(1, spec.items + 1)]
    table = ItemTable(
        ids=ids, asin=[f"SYN{i:06d}" for i in range(1, spec.items + 1)], has={"image": has_image, "text": has_text}
    )
    return RawData(
        users=[str(u) for u in range(1, spec.users + 1)],
        histories=histories,
        items=table,
        features={"image": image, "text": text},
        feature_ids=ids,
    )
