"""Loading a preprocessed dataset directory and slicing sample inputs out of it."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

# The dataset format: a folder holding the arrays (DATA_FILE) and a manifest that says what made them
FORMAT_VERSION = 3
DATA_FILE, MANIFEST = "data.npz", "manifest.json"
KIND = "mmsr-dgl dataset"  # the manifest's "kind" (see io.FOLDER_KINDS)
OUR_FILES = {DATA_FILE, MANIFEST}

SPLITS = ("train", "valid", "test")


@dataclass
class ProcessedData:
    path: Path
    manifest: dict
    user_ids: np.ndarray  # str [n_users]
    item_ids: np.ndarray  # str [n_items + 1]; index 0 is padding
    item_asin: np.ndarray | None
    seq_offsets: np.ndarray  # int64 [n_users + 1]
    seq_items: np.ndarray  # int32 [n_interactions]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (user [S], target position [S])
    codes: dict[str, np.ndarray]  # modality -> int32 [n_items + 1, k], -1 = no code
    centroids: dict[str, np.ndarray]  # modality -> float32 [n_codes, reduced_dim]
    features: dict[str, np.ndarray]  # modality -> float32 [n_items + 1, reduced_dim], 0 = no features

    @property
    def n_items(self) -> int:
        """Number of item ids including the padding id 0 (RecBole's convention)."""
        return len(self.item_ids)

    @property
    def item_names(self) -> np.ndarray:
        """What users call each item id: its ASIN where the items file gave one (not blank), else its raw id."""
        if self.item_asin is None:
            return self.item_ids
        return np.where(np.char.str_len(self.item_asin.astype(str)) > 0, self.item_asin, self.item_ids)

    @property
    def max_len(self) -> int:
        return int(self.manifest["settings"]["max_len"])

    @property
    def modalities(self) -> list[str]:
        return sorted(self.codes)

    def item_content(self, modalities: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The codes and the reduced features of every item, for these modalities."""
        return {m: self.codes[m] for m in modalities}, {m: self.features[m] for m in modalities}

    def matches(self, fingerprint: str) -> bool:
        """Whether this is the dataset (same format, inputs and settings) that had `fingerprint`."""
        return fingerprint == self.manifest["fingerprint"]

    def history(self, user: int) -> np.ndarray:
        return self.seq_items[self.seq_offsets[user] : self.seq_offsets[user + 1]]

    def inputs(
        self, users: np.ndarray, ends: np.ndarray | None = None, full: bool = False, window: int | None = None
    ) -> list[np.ndarray]:
        """The last `window` (default `max_len`) items, or all of them if `full`, before position `ends[i]` of
        each user's history (before its end if `ends` is None)."""
        starts = self.seq_offsets[users]
        stops = self.seq_offsets[users + 1] if ends is None else starts + ends
        width = window or self.max_len
        return [self.seq_items[a if full else max(a, b - width) : b] for a, b in zip(starts, stops)]

    def targets(self, split: str) -> np.ndarray:
        users, positions = self.splits[split]
        return self.seq_items[self.seq_offsets[users] + positions]

    def drop_codes(self, modality: str, rate: float, seed: int) -> None:
        """Make a random `rate` share of the items (fixed by `seed`) lack `modality`, as if it were missing:
        no codes and zero features. Replaces the `codes` and `features` dicts, so copies made with
        `dataclasses.replace` keep theirs."""
        if modality not in self.codes:
            raise UserError(f"modality '{modality}' is not in the dataset (it has {self.modalities})")
        if not 0 <= rate <= 1:
            raise UserError(f"missing rate for '{modality}' must be in [0, 1], got {rate}")
        n_rows = len(self.codes[modality])
        dropped = np.random.default_rng([seed, n_rows]).random(n_rows) < rate  # [n_items + 1]
        self.codes = {**self.codes, modality: np.where(dropped[:, None], -1, self.codes[modality]).astype(np.int32)}
        self.features = {
            **self.features,
            modality: np.where(dropped[:, None], 0, self.features[modality]).astype(np.float32),
        }

    def repeats_items(self) -> bool:
        """Whether some user's history holds an item more than once."""
        lengths = np.diff(self.seq_offsets)
        pairs = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths) * self.n_items + self.seq_items
        return len(np.unique(pairs)) < len(pairs)

    def train_popularity(self) -> np.ndarray:
        """Interaction counts per item id over the training part of the histories (before validation)."""
        users, positions = self.splits["valid"]
        cut = np.zeros(len(self.user_ids), dtype=np.int64)
        cut[users] = positions
        lengths = np.diff(self.seq_offsets)
        position = np.arange(len(self.seq_items)) - np.repeat(self.seq_offsets[:-1], lengths)
        train = self.seq_items[position < np.repeat(cut, lengths)]
        return np.bincount(train, minlength=self.n_items).astype(np.float32)


def load_processed(path: str | Path) -> ProcessedData:
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except OSError:
        raise UserError(f"{path}: no {MANIFEST}; run `mmsr-dgl preprocess --out {path}` first") from None
    except ValueError as err:
        raise UserError(f"{path / MANIFEST}: not valid JSON ({err})") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int):
        raise UserError(f"{path / MANIFEST}: not an mmsr-dgl dataset manifest")
    if version < FORMAT_VERSION:
        raise UserError(
            f"{path}: dataset format {version} was made by an earlier version of mmsr-dgl (this "
            f"version reads format {FORMAT_VERSION}); run `mmsr-dgl preprocess --out {path}` again"
        )
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path}: dataset format {version} was made by a newer mmsr-dgl (this version reads "
            f"format {FORMAT_VERSION}); upgrade mmsr-dgl or preprocess again"
        )
    again = f"run the same `mmsr-dgl preprocess` again (it rebuilds {DATA_FILE})"
    expected = manifest.get("data_file") or {}
    if not (path / DATA_FILE).is_file() or (path / DATA_FILE).stat().st_size != expected.get("bytes"):
        raise UserError(f"{path / DATA_FILE}: missing, or not the size its manifest records (damaged?); {again}")
    try:
        with np.load(path / DATA_FILE, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path / DATA_FILE}: cannot be read ({err}); {again}") from None
    modalities = manifest["modalities"]
    needed = [
        "user_ids",
        "item_ids",
        "seq_offsets",
        "seq_items",
        *(f"{s}_{a}" for s in SPLITS for a in ("user", "pos")),
        *(f"{kind}_{m}" for m in modalities for kind in ("codes", "centroids", "features")),
    ]
    missing = [name for name in needed if name not in arrays]
    if missing:
        raise UserError(f"{path / DATA_FILE}: lacks the arrays {', '.join(missing)} (damaged?); {again}")
    return ProcessedData(
        path=path,
        manifest=manifest,
        user_ids=arrays["user_ids"],
        item_ids=arrays["item_ids"],
        item_asin=arrays.get("item_asin"),
        seq_offsets=arrays["seq_offsets"],
        seq_items=arrays["seq_items"],
        splits={s: (arrays[f"{s}_user"].astype(np.int64), arrays[f"{s}_pos"].astype(np.int64)) for s in SPLITS},
        codes={m: arrays[f"codes_{m}"] for m in modalities},
        centroids={m: arrays[f"centroids_{m}"] for m in modalities},
        features={m: arrays[f"features_{m}"] for m in modalities},
    )
