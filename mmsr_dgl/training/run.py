"""A run directory: its configuration, its checkpoints (tensors and plain values only), its model."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
import yaml

from ..config import check_type, field_types
from ..data import ProcessedData, load_processed
from ..data.atomic import write_file_atomic
from ..errors import UserError
from ..nn import MMSR, Recommender, SASRec
from .config import TrainConfig

CHECKPOINT_FORMAT = 2
CONFIG_FILE = "config.yaml"
EARLIER_VERSION = "made by an earlier version of mmsr-dgl, train again"


def load_data(config: TrainConfig, data_dir: Path) -> ProcessedData:
    """The dataset as this configuration sees it (with `missing_modality` dropped for `missing_rate` of items)."""
    data = load_processed(data_dir)
    if config.missing_modality is not None:
        data.drop_codes(config.missing_modality, config.missing_rate, config.seed)
    return data


def check_model_size(config: TrainConfig, data: ProcessedData) -> None:
    """Refuse, before allocating anything, a model that cannot fit in this machine's memory: at least its item
    embeddings [n_items, dim] and a dozen dim x dim projections per layer, each as weights, gradients and Adam's
    two moments in float32."""
    params = data.n_items * config.dim + 12 * config.n_layers * config.dim ** 2
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if 16 * params > total:
        raise UserError(f"settings 'dim' ({config.dim}) and 'n_layers' ({config.n_layers}): the model needs at least "
                        f"{16 * params / 2 ** 30:,.0f} GiB for its weights and optimizer state; this machine has "
                        f"{total / 2 ** 30:,.0f} GiB")


def build_model(config: TrainConfig, data: ProcessedData) -> Recommender:
    check_model_size(config, data)
    model = _build(config, data)
    model.set_sampled(config.n_negatives)
    return model


def _build(config: TrainConfig, data: ProcessedData) -> Recommender:
    missing = set(config.modalities or []) - set(data.modalities)
    if missing:
        raise UserError(f"setting 'modalities': {sorted(missing)} not in the dataset (it has {data.modalities})")
    names = data.modalities if config.modalities is None else config.modalities
    model, model_config = (SASRec, config.sasrec()) if config.model == "sasrec" else (MMSR, config.mmsr())
    return model(model_config, data.n_items, data.max_len, {m: data.centroids[m] for m in names},
                 *data.item_content(names))


def save_checkpoint(path: Path, state: dict) -> None:
    write_file_atomic(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp))


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        detail = "" if "weights_only" in reason or not reason else f": {reason}"
        raise UserError(f"{path}: not a readable mmsr-dgl checkpoint ({type(err).__name__}{detail})") from None
    if not isinstance(state, dict) or not isinstance(state.get("format"), int):
        raise UserError(f"{path}: not an mmsr-dgl checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: checkpoint format {state['format']} (this version reads {CHECKPOINT_FORMAT}); "
                        f"{EARLIER_VERSION if state['format'] < CHECKPOINT_FORMAT else 'made by a newer mmsr-dgl'}")
    return state


def restore_model(model: Recommender, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as err:
        raise UserError(f"{path}: checkpoint does not match the model of this run ({err})") from None


def write_run_config(run_dir: Path, config: TrainConfig, data_dir: Path, fingerprint: str) -> None:
    payload = {"data": str(Path(data_dir).resolve()), "data_fingerprint": fingerprint,
               "config": dataclasses.asdict(config)}
    write_file_atomic(run_dir / CONFIG_FILE, lambda tmp: tmp.write_text(yaml.safe_dump(payload, sort_keys=False)))


def read_run_config(path: Path) -> dict:
    """The contents of a run's config.yaml: data directory, data fingerprint and settings."""
    try:
        payload = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: not a readable run configuration ({err})") from None
    if not (isinstance(payload, dict) and isinstance(payload.get("config"), dict)
            and {"data", "data_fingerprint"} <= set(payload)):
        raise UserError(f"{path}: not a run configuration written by `mmsr-dgl train`")
    return payload


def run_config(settings: dict, path: Path) -> TrainConfig:
    """The TrainConfig a run was trained with; a run with other settings than this version's is refused."""
    kinds = field_types(TrainConfig)
    for problem, names in (("unknown", set(settings) - set(kinds)), ("missing", set(kinds) - set(settings))):
        if names:
            raise UserError(f"{path}: {problem} setting {', '.join(map(repr, sorted(names)))}; this run was "
                            f"{EARLIER_VERSION}")
    try:
        values = {k: check_type(f"{k}' in '{path}", v, kinds[k]) for k, v in settings.items()}
        config = TrainConfig(**values)
        config.validate()
    except UserError as err:
        raise UserError(f"{err}; this run was probably {EARLIER_VERSION}") from None
    return config


def run_settings(run_dir: Path) -> tuple[TrainConfig, Path, str]:
    """The settings a run was trained with, the dataset directory it was trained on and that dataset's
    fingerprint."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {CONFIG_FILE}; is this a run directory made by `mmsr-dgl train`?")
    payload = read_run_config(path)
    return run_config(payload["config"], path), Path(payload["data"]), payload["data_fingerprint"]


def load_run(run_dir: Path, checkpoint: str = "best",
             data_dir: Path | None = None) -> tuple[TrainConfig, ProcessedData, Recommender]:
    """Config, dataset and model (weights from `checkpoint`: best or last) of a finished or running run;
    `data_dir`: where its dataset is now, when it moved."""
    run_dir = Path(run_dir)
    config, trained_on, fingerprint = run_settings(run_dir)
    data_dir = Path(data_dir) if data_dir else trained_on
    if not data_dir.exists():
        raise UserError(f"{run_dir}: its dataset {data_dir} is not there (moved or deleted?); point at it with "
                        f"--data DIR")
    data = load_data(config, data_dir)
    if not data.matches(fingerprint):
        raise UserError(f"{data_dir}: not the dataset this run was trained on, or it changed since "
                        f"(fingerprint mismatch)")
    model = build_model(config, data)
    ckpt_path = run_dir / f"{checkpoint}.pt"
    restore_model(model, load_checkpoint(ckpt_path), ckpt_path)
    return config, data, model


RUN_FILES = (CONFIG_FILE, "best.pt", "last.pt", "metrics.jsonl", "results.json", "train.log")


def remove_run(run_dir: Path, keep: tuple[str, ...] = ()) -> None:
    """Delete the files of an earlier run in `run_dir` (only those a run writes), but `keep`."""
    for name in set(RUN_FILES) - set(keep):
        (Path(run_dir) / name).unlink(missing_ok=True)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
