"""A run directory: its configuration, its checkpoints (tensors and plain values only), its model."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import torch
import yaml

from ..config import build_config, check_type, field_types
from ..data import ProcessedData, load_processed
from ..errors import UserError
from ..io import RUN_OWN_FILES, folder_kind, write_file_atomic
from ..nn import Recommender
from .config import MODELS, TrainConfig

CHECKPOINT_FORMAT = 2
CONFIG_FILE = "config.yaml"
RESUME_FREE = ("epochs", "num_workers", "threads")  # settings a resumed run may change (and the process count)
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
    params = data.n_items * config.dim + 12 * config.n_layers * config.dim**2
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if 16 * params > total:
        raise UserError(
            f"settings 'dim' ({config.dim}) and 'n_layers' ({config.n_layers}): the model needs at least "
            f"{16 * params / 2**30:,.0f} GiB for its weights and optimizer state; this machine has "
            f"{total / 2**30:,.0f} GiB"
        )


def build_model(config: TrainConfig, data: ProcessedData) -> Recommender:
    check_model_size(config, data)
    if config.n_negatives >= data.n_items - 1:
        raise UserError(
            f"setting 'n_negatives' ({config.n_negatives}): the dataset has {data.n_items - 1} items; "
            f"sample fewer, or set 0 for the full softmax over all of them"
        )
    model = _build(config, data)
    model.set_sampled(config.n_negatives)
    return model


def _build(config: TrainConfig, data: ProcessedData) -> Recommender:
    missing = set(config.modalities or []) - set(data.modalities)
    if missing:
        raise UserError(f"setting 'modalities': {sorted(missing)} not in the dataset (it has {data.modalities})")
    names = data.modalities if config.modalities is None else config.modalities
    return MODELS[config.model].model(
        config.model_settings(),
        data.n_items,
        data.max_len,
        {m: data.centroids[m] for m in names},
        *data.item_content(names),
    )


def save_checkpoint(path: Path, state: dict) -> None:
    try:
        write_file_atomic(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp))
    except RuntimeError as err:  # torch's writer reports a full disk or a lost file system as a RuntimeError
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{path}: the checkpoint could not be written ({reason}); is the disk full? The previous "
            f"checkpoint is intact: free space and continue with --resume"
        ) from None


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
        raise UserError(
            f"{path}: checkpoint format {state['format']} (this version reads {CHECKPOINT_FORMAT}); "
            f"{EARLIER_VERSION if state['format'] < CHECKPOINT_FORMAT else 'made by a newer mmsr-dgl'}"
        )
    return state


def settings_differ(config: TrainConfig, state: dict) -> list[str]:
    """The settings (but RESUME_FREE) in which `config` differs from those a checkpoint was written with."""
    saved, current = state["config"], dataclasses.asdict(config)
    return [k for k in {**current, **saved} if k not in RESUME_FREE and saved.get(k) != current.get(k)]


def restore_model(model: Recommender, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as err:
        found = set(state.get("model", {}))
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - found), sorted(found - expected)
        detail = "; ".join(
            f"{len(names)} {kind} weights ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            for kind, names in (("missing", missing), ("unexpected", unexpected))
            if names
        )
        raise UserError(
            f"{path}: checkpoint does not match the model of this run ({detail or str(err).strip().splitlines()[0]})"
        ) from None


def write_run_config(run_dir: Path, config: TrainConfig, data_dir: Path, fingerprint: str) -> None:
    payload = {
        "data": str(Path(data_dir).resolve()),
        "data_fingerprint": fingerprint,
        "config": dataclasses.asdict(config),
    }
    write_file_atomic(run_dir / CONFIG_FILE, lambda tmp: tmp.write_text(yaml.safe_dump(payload, sort_keys=False)))


def read_run_config(path: Path) -> dict:
    """The contents of a run's config.yaml: data directory, data fingerprint and settings."""
    try:
        payload = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: not a readable run configuration ({err})") from None
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("config"), dict)
        and {"data", "data_fingerprint"} <= set(payload)
    ):
        raise UserError(f"{path}: not a run configuration written by `mmsr-dgl train`")
    return payload


def run_config(settings: dict, path: Path) -> TrainConfig:
    """The TrainConfig a run was trained with; a run with other settings than this version's is refused."""
    kinds = field_types(TrainConfig)
    for problem, names in (("unknown", set(settings) - set(kinds)), ("missing", set(kinds) - set(settings))):
        if names:
            raise UserError(
                f"{path}: {problem} setting {', '.join(map(repr, sorted(names)))}; this run was {EARLIER_VERSION}"
            )
    try:
        values = {k: check_type(f"{k}' in '{path}", v, kinds[k]) for k, v in settings.items()}
        config = TrainConfig(**values)
        config.validate()
    except UserError as err:
        raise UserError(
            f"{err}; the file was edited by hand (put back what `mmsr-dgl train` wrote), or {EARLIER_VERSION}"
        ) from None
    return config


def run_settings(run_dir: Path) -> tuple[TrainConfig, Path, str]:
    """The settings a run was trained with, the dataset directory it was trained on and that dataset's
    fingerprint."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {CONFIG_FILE}; is this a run directory made by `mmsr-dgl train`?")
    payload = read_run_config(path)
    return run_config(payload["config"], path), Path(payload["data"]), payload["data_fingerprint"]


def requested_settings(
    run_dir: Path, config_file: Path | None, overrides: list[str], resume: bool
) -> tuple[TrainConfig, Path | None]:
    """The settings a `train` command asks for and the dataset it names: resuming, the run's own settings and
    dataset, updated by `config_file` and then `overrides`; else the defaults updated by them (and no dataset)."""
    if not resume:
        return build_config(TrainConfig, config_file, overrides), None
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        raise UserError(f"{run_dir}: nothing to resume (no run there)")
    saved, trained_on, _ = run_settings(run_dir)
    return build_config(TrainConfig, config_file, overrides, base=dataclasses.asdict(saved)), trained_on


def load_run(
    run_dir: Path, checkpoint: str = "best", data_dir: Path | None = None
) -> tuple[TrainConfig, ProcessedData, Recommender]:
    """Config, dataset and model (weights from `checkpoint`: best or last) of a finished or running run;
    `data_dir`: where its dataset is now, when it moved."""
    run_dir = Path(run_dir)
    config, trained_on, fingerprint = run_settings(run_dir)
    data_dir = Path(data_dir) if data_dir else trained_on
    if not data_dir.exists():
        raise UserError(
            f"{run_dir}: its dataset {data_dir} is not there (moved or deleted?); point at it with --data DIR"
        )
    data = load_data(config, data_dir)
    if not data.matches(fingerprint):
        raise UserError(
            f"{data_dir}: not the dataset this run was trained on, or it changed since (fingerprint mismatch)"
        )
    ckpt_path = run_dir / f"{checkpoint}.pt"
    state = load_checkpoint(ckpt_path)
    differs = settings_differ(config, state)
    if differs:  # a hand-edited config.yaml: the weights belong to the checkpoint's settings
        trained = ", ".join(f"{k}={state['config'].get(k)!r}" for k in differs)
        raise UserError(
            f"{run_dir / CONFIG_FILE}: settings {', '.join(differs)} differ from those {ckpt_path.name} "
            f"was trained with ({trained}); put them back, or train a new run with the new settings"
        )
    model = build_model(config, data)
    restore_model(model, state, ckpt_path)
    return config, data, model


def remove_run(run_dir: Path, keep: tuple[str, ...] = ()) -> None:
    """Delete the files of an earlier run in `run_dir` (only those a run writes, and its `inspect` output), but
    `keep`."""
    for name in RUN_OWN_FILES - set(keep):
        (Path(run_dir) / name).unlink(missing_ok=True)
    if folder_kind(Path(run_dir) / "inspect") == "inspect":
        shutil.rmtree(Path(run_dir) / "inspect")
