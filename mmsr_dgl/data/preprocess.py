"""`mmsr-dgl preprocess`: raw files (or the synthetic default) -> a cached, graph-ready dataset directory."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from ..errors import UserError
from ..io import check_replaceable, claim_dir, read_json, recover, replace_directory, sha256_file
from .codes import fit_codes
from .dataset import DATA_FILE, FORMAT_VERSION, KIND, MANIFEST, OUR_FILES
from .readers import RawData, integer_id, read_features, read_interactions, read_items, read_sequences
from .synthetic import SyntheticSpec, generate

AUTO_ITEMS_PER_CODE, AUTO_MAX_CODES = 3, 4096  # n_codes=0: a code shared by about 3 items (chosen on Toys)
MAX_LEN = 10_000  # a history position is a column of every node's position features: bounded


@dataclass
class PreprocessConfig:
    k_core: int = 5  # users and items with fewer interactions are removed, repeatedly; 0 disables
    split: Literal["loo", "ratio"] = "loo"
    test_ratio: float = 0.2  # 'ratio' split: share of each history used as test positions
    max_len: int = 50  # longest input history; older items are dropped
    pca_dim: int = 128
    n_codes: int = 0  # codes (k-means clusters) per modality; 0: one per 3 items, at most 4,096
    codes_per_item: int = 1  # links from an item to its nearest codes
    normalize_features: bool = True  # L2-normalise feature rows before PCA (CLIP features are cosine-shaped)
    fit_codes_on_train: bool = False  # fit PCA and k-means on items seen in training only
    seed: int = 2023
    synthetic: SyntheticSpec = dataclasses.field(default_factory=SyntheticSpec)  # --synthetic only

    def validate(self) -> None:
        checks = {
            "k_core": self.k_core >= 0,
            "max_len": 1 <= self.max_len <= MAX_LEN,
            "pca_dim": self.pca_dim >= 1,
            "n_codes": self.n_codes >= 0,
            "codes_per_item": self.codes_per_item >= 1,
            "test_ratio": 0 < self.test_ratio < 1,
            "seed": 0 <= self.seed < 2**32,
        }
        for name, ok in checks.items():
            if not ok:
                raise UserError(f"setting '{name}': value {getattr(self, name)!r} is out of range")
        self.synthetic.validate()
        if self.n_codes and self.codes_per_item > self.n_codes:
            raise UserError(
                f"settings 'codes_per_item' ({self.codes_per_item}) and 'n_codes' ({self.n_codes}): an "
                f"item cannot link to more codes than there are"
            )
        if self.split == "loo" and self.test_ratio != PreprocessConfig.test_ratio:
            raise UserError("setting 'test_ratio' applies to split=ratio only (leave-one-out tests the last item)")


@dataclass
class Inputs:
    sequences: Path | None = None
    interactions: Path | None = None
    items: Path | None = None
    features: dict[str, Path] = dataclasses.field(default_factory=dict)
    synthetic: bool = False

    def check(self) -> None:
        if sum([self.sequences is not None, self.interactions is not None, self.synthetic]) != 1:
            raise UserError("give exactly one of --sequences, --interactions or --synthetic")
        if self.synthetic and (self.items or self.features):
            raise UserError("--synthetic generates its own items and features; drop --items and --features")

    def describe(self) -> dict:
        """Path, size and SHA-256 of every input file, for the manifest and the up-to-date check."""
        files = {
            "sequences": self.sequences,
            "interactions": self.interactions,
            "items": self.items,
            **{f"features.{m}": p for m, p in sorted(self.features.items())},
        }
        described = {}
        for role, path in files.items():
            if path is None:
                continue
            if not Path(path).is_file():
                what = "not a regular file (a folder, FIFO or device)" if Path(path).exists() else "file not found"
                raise UserError(f"{path}: {what} (--{role.split('.')[0]})")
            described[role] = {
                "path": str(Path(path).resolve()),
                "bytes": Path(path).stat().st_size,
                "sha256": sha256_file(Path(path)),
            }
        return {"synthetic": self.synthetic, "files": described}


class _Stages:
    """Per-stage wall-clock timing, reported through `log`."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.times, self._start = log, {}, time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round(now - self._start, 3)
        self.log(f"  {name:<24s} {now - self._start:7.2f} s")
        self._start = now


def preprocess(
    config: PreprocessConfig,
    inputs: Inputs,
    out: str | Path,
    log: Callable[[str], None] = print,
    force: bool = False,
    wait: bool = False,
) -> dict:
    """Build the dataset directory `out`; returns its manifest. Does nothing when `out` is up to date (same inputs
    and settings, its data file as the manifest describes it), unless `force`. `wait`: when another process is
    writing `out`, wait for it (then find the dataset up to date) instead of refusing."""
    inputs.check()
    if not inputs.synthetic:
        default = SyntheticSpec()
        changed = [
            f"synthetic.{f.name}"
            for f in dataclasses.fields(default)
            if getattr(config.synthetic, f.name) != getattr(default, f.name)
        ]
        if changed:
            raise UserError(f"settings {', '.join(changed)} apply to --synthetic only, not to your files")
    out = Path(out)
    settings = {k: v for k, v in dataclasses.asdict(config).items() if inputs.synthetic or k != "synthetic"}
    described = inputs.describe()
    fingerprint = data_fingerprint(settings, described)
    recover(out)
    with claim_dir(out, "dataset", wait=wait):
        existing = read_json(out / MANIFEST)
        if not force and _up_to_date(existing, fingerprint, out, log):
            return existing
        check_replaceable(out, OUR_FILES)  # before the expensive work
        stages = _Stages(log)
        arrays, counts = _sequences(inputs, config, stages, log)
        code_stats = _fit_all_codes(arrays.pop("raw"), config, arrays, stages, log)
        manifest = {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "fingerprint": fingerprint,
            "settings": settings,
            "inputs": described,
            "modalities": sorted(code_stats),
            "counts": counts,
            "code_stats": code_stats,
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with replace_directory(out, OUR_FILES) as tmp:
            np.savez(tmp / DATA_FILE, **arrays)
            manifest["data_file"] = describe_file(tmp / DATA_FILE)
            manifest["stage_seconds"] = stages.times
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        stages.done("write")
    return manifest


def _up_to_date(existing: dict | None, fingerprint: str, out: Path, log: Callable[[str], None]) -> bool:
    """Whether the dataset in `out` was built from the same inputs and settings and its data file is intact."""
    if not (
        isinstance(existing, dict)
        and existing.get("kind") == KIND
        and existing.get("format_version") == FORMAT_VERSION
        and existing.get("fingerprint") == fingerprint
    ):
        return False
    if existing.get("data_file") == describe_file(out / DATA_FILE):
        log(f"{out}: up to date (same inputs and settings); nothing to do")
        return True
    log(f"{out / DATA_FILE}: missing or not the file its manifest describes (damaged?); building it again")
    return False


def _sequences(
    inputs: Inputs, config: PreprocessConfig, stages: _Stages, log: Callable[[str], None]
) -> tuple[dict, dict]:
    """The arrays of the users' sequences and splits (and the raw inputs, under "raw"), and the counts."""
    raw = _load(inputs, config, log)
    stages.done("read inputs")
    offsets, seq_items, users, item_ids = _filter_and_remap(raw, config.k_core)
    read = {
        "users": len(raw.users),
        "items": len(set(itertools.chain.from_iterable(raw.histories))),
        "interactions": sum(len(h) for h in raw.histories),
    }
    if config.k_core:
        log(
            f"  {config.k_core}-core filter: kept {len(users):,} of {read['users']:,} users, {len(item_ids):,} of "
            f"{read['items']:,} items, {len(seq_items):,} of {read['interactions']:,} interactions"
        )
    stages.done("k-core and id remap")
    splits = make_splits(offsets, config.split, config.test_ratio)
    if not len(splits["train"][0]):
        raise UserError(
            f"no training samples: none of the {len(users)} users left by the k-core filter "
            f"(k_core={config.k_core}) has a training target, an item with one before it and the "
            f"validation and test targets after it (split {config.split}; leave-one-out needs 4 items)"
        )
    stages.done("splits")
    arrays = {
        "raw": raw,
        "user_ids": np.asarray(users),
        "item_ids": np.asarray([""] + item_ids),
        "seq_offsets": offsets,
        "seq_items": seq_items,
    }
    if raw.items is not None and raw.items.asin is not None:
        asin = dict(zip(raw.items.ids, raw.items.asin))
        arrays["item_asin"] = np.asarray([""] + [asin[i] for i in item_ids])
    for name, (split_users, split_pos) in splits.items():
        arrays[f"{name}_user"], arrays[f"{name}_pos"] = split_users, split_pos
    counts = {
        "users": len(users),
        "items": len(item_ids),
        "interactions": int(len(seq_items)),
        **{f"{name}_samples": int(len(u)) for name, (u, _) in splits.items()},
        "read": read,
    }
    return arrays, counts


def _fit_all_codes(
    raw: RawData, config: PreprocessConfig, arrays: dict, stages: _Stages, log: Callable[[str], None]
) -> dict:
    """Fit each modality's codes; adds its codes, centroids and reduced features to `arrays`; returns the stats."""
    offsets, seq_items, item_ids = arrays["seq_offsets"], arrays["seq_items"], arrays["item_ids"][1:].tolist()
    code_stats = {}
    fit_mask = _train_items(offsets, seq_items, (arrays["valid_user"], arrays["valid_pos"]), len(item_ids) + 1)
    for modality, (matrix, present) in _aligned_features(raw, item_ids).items():
        fit_rows = present & fit_mask if config.fit_codes_on_train else present
        n_codes = config.n_codes or min(AUTO_MAX_CODES, max(2, int(fit_rows.sum()) // AUTO_ITEMS_PER_CODE))
        log(f"  codes: {modality}: k-means, {n_codes} codes on {int(fit_rows.sum())} items ...")
        try:
            codes = fit_codes(
                matrix,
                present,
                fit_rows,
                pca_dim=config.pca_dim,
                n_codes=n_codes,
                codes_per_item=config.codes_per_item,
                normalize=config.normalize_features,
                seed=config.seed,
            )
        except ValueError as err:
            raise UserError(f"modality '{modality}': {err}") from None
        arrays[f"codes_{modality}"], arrays[f"centroids_{modality}"] = codes.codes, codes.centroids
        arrays[f"features_{modality}"] = codes.reduced
        code_stats[modality] = codes.stats
        if codes.stats["n_codes"] < n_codes or codes.reduced.shape[1] < config.pca_dim:
            log(
                f"  modality '{modality}': {int(fit_rows.sum())} items to fit, {matrix.shape[1]} feature columns: "
                f"{codes.stats['n_codes']} codes (n_codes={n_codes}), {codes.reduced.shape[1]} reduced "
                f"dimensions (pca_dim={config.pca_dim})"
            )
        stages.done(f"codes: {modality}")
    return code_stats


def data_fingerprint(settings: dict, described: dict) -> str:
    """Identifies a dataset directory: format version, settings and inputs (with their hashes)."""
    return hashlib.sha256(json.dumps([FORMAT_VERSION, settings, described], sort_keys=True).encode()).hexdigest()


def describe_file(path: Path) -> dict | None:
    """Size and SHA-256 of a file (None when it cannot be read)."""
    try:
        return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    except OSError:
        return None


def _load(inputs: Inputs, config: PreprocessConfig, log: Callable[[str], None]) -> RawData:
    if inputs.synthetic:
        return generate(config.synthetic)
    raw = read_sequences(inputs.sequences) if inputs.sequences else read_interactions(inputs.interactions)
    if inputs.items:
        raw.items = read_items(inputs.items)
        if inputs.sequences:  # integer ids there: the items file's ids in the same canonical form
            canonical = [integer_id(i) for i in raw.items.ids]
            if len(set(canonical)) < len(canonical):
                twice = next(i for i in canonical if canonical.count(i) > 1)
                raise UserError(f"{inputs.items}: item_id {twice} appears twice (ids such as 007 and 7 are one)")
            raw.items.ids = canonical
        if raw.items.ignored:
            log(f"{inputs.items}: columns {', '.join(raw.items.ignored)} are not used")
        known = set(raw.items.ids)
        for where, history in zip(raw.origin, raw.histories):
            for item in history:
                if item not in known:
                    raise UserError(f"{where}: item {item!r} is not in the items file {inputs.items}")
    n_rows = len(raw.items.ids) if raw.items else None
    for modality, path in inputs.features.items():
        raw.features[modality] = read_features(path, modality, n_rows)
    if raw.features:
        if raw.items:
            raw.feature_ids = raw.items.ids
        else:
            n = {m.shape[0] for m in raw.features.values()}
            if len(n) != 1:
                raise UserError(
                    f"feature matrices have different row counts {sorted(n)}; without --items their "
                    "rows must follow item ids 1..N"
                )
            raw.feature_ids = [str(i) for i in range(1, n.pop() + 1)]
            known, files = set(raw.feature_ids), ", ".join(map(str, inputs.features.values()))
            for where, history in zip(raw.origin, raw.histories):
                for item in history:
                    if item not in known:
                        raise UserError(
                            f"{where}: item {item!r} has no row in {files} ({len(known)} rows; "
                            "without --items, row r is item id r+1)"
                        )
            _check_extra_rows(raw, files, log)
    return raw


def _check_extra_rows(raw: RawData, files: str, log: Callable[[str], None]) -> None:
    """Without --items, feature rows beyond the largest item id of the histories are unused: said in the log, and
    refused where they look like a padding row 0 (one row too many, all zeros), which would shift every item."""
    largest = max(int(item) for history in raw.histories for item in history)
    extra = len(raw.feature_ids) - largest
    if not extra:
        return
    padding = [m for m, matrix in raw.features.items() if not np.any(matrix[0])]
    if extra == 1 and padding:
        raise UserError(
            f"{files}: one row more than the largest item id ({largest}) and row 0 of {', '.join(padding)} is all "
            "zeros, as a padding row would be; without --items row r is item id r+1, so every item would get the "
            "features of the one before it. Drop the padding row (matrix[1:]), or give --items to name each row"
        )
    log(f"{files}: the last {extra:,} rows are not used (no item id above {largest} in the histories)")


def _filter_and_remap(raw: RawData, k_core: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """k-core filtering, then ids 1..n in raw-id order (numeric where all ids are integers); 0 is padding.
    Returns the kept histories (offsets [n_users + 1], items [n_interactions]), their raw user ids and the raw
    item id of each new id."""
    lengths = np.array([len(h) for h in raw.histories])
    user_of = np.repeat(np.arange(len(raw.histories)), lengths)
    raw_items, item_of = np.unique(np.asarray(list(itertools.chain.from_iterable(raw.histories))), return_inverse=True)
    keep = np.ones(len(item_of), dtype=bool)
    while k_core > 0:
        user_count = np.bincount(user_of[keep], minlength=len(lengths))
        item_count = np.bincount(item_of[keep], minlength=len(raw_items))
        drop = keep & ((user_count[user_of] < k_core) | (item_count[item_of] < k_core))
        if not drop.any():
            break
        keep &= ~drop
    if not keep.any():
        raise UserError(f"no interactions left after {k_core}-core filtering; lower --set k_core=N (0 disables)")
    kept_items = np.unique(item_of[keep])
    names = raw_items[kept_items]
    numeric = all(n.isascii() and n.isdigit() for n in names)
    # numeric order of ids of any length: by digit count, then digits (leading zeros aside)
    order = (
        np.asarray(sorted(range(len(names)), key=lambda i: (len(names[i].lstrip("0")), names[i].lstrip("0"))))
        if numeric
        else np.arange(len(names))
    )
    new_id = np.zeros(len(raw_items), dtype=np.int64)
    new_id[kept_items[order]] = np.arange(1, len(kept_items) + 1)
    kept = np.bincount(user_of[keep], minlength=len(lengths))  # interactions kept per user
    offsets = np.concatenate([[0], np.cumsum(kept[kept > 0])]).astype(np.int64)
    users = [raw.users[u] for u in np.flatnonzero(kept)]
    return offsets, new_id[item_of[keep]].astype(np.int32), users, [str(n) for n in names[order]]


def make_splits(offsets: np.ndarray, split: str, test_ratio: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Samples as (user, target position); the input of a sample is the history before its target.

    loo:   test = last item, valid = second last, train = every earlier position with at least one item before.
    ratio: test = every position of the last `test_ratio` of the history (at least one), valid = the position
           just before the test block, train = every earlier position.
    """
    n = np.diff(offsets)
    n_test = np.ones_like(n) if split == "loo" else np.maximum(1, np.round(n * test_ratio).astype(np.int64))
    first_test = n - n_test
    return {
        "test": _ranges(np.maximum(first_test, 1), n),
        "valid": _ranges(np.maximum(first_test - 1, 1), first_test),
        "train": _ranges(np.ones_like(n), first_test - 1),
    }


def _ranges(start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user, position) for every position in [start[u], stop[u]) of every user u, user by user."""
    count = np.maximum(stop - start, 0)
    users = np.repeat(np.arange(len(count)), count)
    positions = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count - start, count)
    return users.astype(np.int32), positions.astype(np.int32)


def _train_items(
    offsets: np.ndarray, seq_items: np.ndarray, valid: tuple[np.ndarray, np.ndarray], n_ids: int
) -> np.ndarray:
    """Items that occur before each user's validation target (the training part of the histories)."""
    cut = np.zeros(len(offsets) - 1, dtype=np.int64)
    cut[valid[0]] = valid[1]
    position = np.arange(len(seq_items)) - np.repeat(offsets[:-1], np.diff(offsets))
    mask = np.zeros(n_ids, dtype=bool)
    mask[seq_items[position < np.repeat(cut, np.diff(offsets))]] = True
    return mask


def _aligned_features(raw: RawData, item_ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality: float32 [n_items + 1, dim] in the new id order, and which items really have it."""
    if not raw.features:
        return {}
    row_of = {item: row for row, item in enumerate(raw.feature_ids)}
    rows = np.array([row_of.get(i, -1) for i in item_ids])
    aligned = {}
    for modality, matrix in raw.features.items():
        x = np.zeros((len(item_ids) + 1, matrix.shape[1]), dtype=np.float32)
        has = np.zeros(len(item_ids) + 1, dtype=bool)
        found = rows >= 0
        x[1:][found] = matrix[rows[found]]
        row_ok = ~(np.isnan(matrix).all(1) | (matrix == 0).all(1))
        has[1:][found] = row_ok[rows[found]]
        if raw.items is not None and modality in raw.items.has:
            flag = raw.items.has[modality]
            has[1:][found] &= flag[rows[found]]
        x[~has] = 0.0
        aligned[modality] = (x, has)
    return aligned


def _versions() -> dict:
    import platform

    import sklearn

    from .. import __version__

    return {
        "mmsr_dgl": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }
