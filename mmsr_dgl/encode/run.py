"""`encode`: item text and images to feature matrices that `preprocess --features` reads as they are.

Items are encoded in chunks of `chunk_size` rows, each kept in `OUT/.partial` once written, so a killed run resumes
where it stopped; batches are fixed slices of a chunk, so a resumed run writes the same bytes as an uninterrupted
one (with the same number of threads). The outputs replace earlier ones only when all are ready, and only in a
folder that holds nothing but what `encode` wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from ..data.readers import ItemsFile, read_items_file
from ..errors import UserError
from ..io import claim_dir, write_file_atomic
from .encoders import ENCODERS
from .sources import find_images, load_image

KIND = "mmsr-dgl encode"
SUMMARY, ITEMS, SKIPPED, PARTIAL = "encode.json", "items.tsv", "skipped.tsv", ".partial"
OURS = {SUMMARY, ITEMS, SKIPPED, PARTIAL, *(f"{m}.npy" for m in ENCODERS)}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fingerprint(items: Path, images: list[Path | None] | None, settings: dict) -> str:
    """What the outputs depend on: the items file's bytes, each item's image file (name, size, time), settings."""
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) if p else None for p in images or []]
    return _sha256(json.dumps([_sha256(items.read_bytes()), files, settings]).encode())


def _read_kind(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) and found.get("kind") == KIND else {}


def _check_out(out: Path) -> dict:
    """The summary of an earlier finished `encode` in the claimed folder `out` ({} if none); refuses a folder that
    also holds files `encode` did not write, and removes the temporary files of a killed one."""
    entries = sorted(p.name for p in out.iterdir())
    leftovers = [e for e in entries if e.startswith(".") and e.partition(".tmp-")[0][1:] in OURS and ".tmp-" in e]
    foreign = [e for e in entries if e not in OURS and e not in leftovers]
    if foreign:
        raise UserError(f"{out}: holds files that encode did not write ({', '.join(foreign)}); choose another --out")
    for name in leftovers:
        (out / name).unlink()
    return _read_kind(out / SUMMARY)


def _encode_chunk(
    modality: str, encoder, rows: range, items: ItemsFile, images: list[Path | None] | None, batch_size: int
) -> tuple[np.ndarray, list[str]]:
    """float32 [len(rows), dim] (zero rows where nothing was encoded) and why each row was skipped ('' if not)."""
    inputs, reasons = [], []
    for row in rows:
        if modality == "text":
            value, reason = items.text(row)
        elif images[row] is None:
            value, reason = None, "no image file"
        else:
            value, reason = load_image(images[row])
        inputs.append(value)
        reasons.append(reason)
    features = np.zeros((len(rows), encoder.dim), dtype=np.float32)
    kept = [i for i, value in enumerate(inputs) if value is not None]
    for start in range(0, len(kept), batch_size):
        batch = kept[start : start + batch_size]
        values = [inputs[i] for i in batch]
        features[batch] = encoder(values if modality == "text" else np.stack(values))
    return features, reasons


def _save_chunk(path: Path, features: np.ndarray, reasons: list[str]) -> None:
    with path.open("wb") as handle:
        np.savez(handle, features=features, reasons=np.array([" ".join(r.split()) for r in reasons]))


def _write_items(path: Path, items: ItemsFile, has: dict[str, np.ndarray]) -> None:
    """The items file with `has_<modality>` set to what was encoded (columns added where missing)."""
    header = list(items.header) + [f"has_{m}" for m in has if f"has_{m}" not in items.header]
    with path.open("wb") as handle:
        handle.write(("\t".join(header) + "\n").encode())
        for r, row in enumerate(items.rows):
            values = dict(zip(items.header, row)) | {f"has_{m}": str(int(flags[r])) for m, flags in has.items()}
            line = "\t".join(values[h] for h in header) + "\n"  # bytes that were not UTF-8 become U+FFFD
            handle.write(line.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode())


def encode(
    items_path: Path,
    out: Path,
    images_dir: Path | None = None,
    text_column: str | None = "text",
    chunk_size: int = 1024,
    batch_size: int = 32,
    force: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict:
    """Encode the text column of `items_path` and/or the images in `images_dir` into `out`; returns the summary."""
    if chunk_size < 1 or batch_size < 1:
        raise UserError("chunk size and batch size must be positive")
    items_path, out = Path(items_path), Path(out)
    items = read_items_file(items_path)
    if text_column and text_column not in items.header:
        if images_dir is None:
            raise UserError(
                f"{items_path}, line 1: no '{text_column}' column for the text (found "
                f"{', '.join(items.header)}), and no --images"
            )
        log(f"{items_path}: no '{text_column}' column; encoding images only")
        text_column = None
    items.text_column = items.header.index(text_column) if text_column else None
    modalities = [m for m, wanted in (("text", text_column), ("image", images_dir)) if wanted]
    if not modalities:
        raise UserError("nothing to encode: give a text column or --images")
    images = find_images(Path(images_dir), items.ids, items.asins) if images_dir else None
    settings = {
        "text_column": text_column,
        "chunk_size": chunk_size,
        "batch_size": batch_size,
        "encoders": {m: ENCODERS[m].name for m in modalities},
    }
    fingerprint = _fingerprint(items_path, images, settings)
    with claim_dir(out, "encode"):
        earlier = _check_out(out)
        outputs = [f"{m}.npy" for m in modalities] + [ITEMS, SKIPPED]
        if earlier.get("fingerprint") == fingerprint and all((out / o).is_file() for o in outputs) and not force:
            shutil.rmtree(out / PARTIAL, ignore_errors=True)  # what a kill after the last rename left
            log(f"{out}: up to date (--force encodes again)")
            return earlier
        partial = out / PARTIAL
        state = partial / "settings.json"
        if partial.exists() and _read_kind(state).get("fingerprint") != fingerprint:
            log(f"{partial}: chunks of other inputs or settings; starting afresh")
            shutil.rmtree(partial)
        (partial / "ready").mkdir(parents=True, exist_ok=True)
        write_file_atomic(state, lambda p: p.write_text(json.dumps({"kind": KIND, "fingerprint": fingerprint})))
        summary = {"kind": KIND, "fingerprint": fingerprint, "items": len(items.rows), **settings}
        has, skipped = {}, []
        for modality in modalities:
            summary[modality] = _encode_modality(
                modality, items, images, chunk_size, batch_size, partial, has, skipped, log, progress
            )
        _publish(out, items, modalities, has, skipped, summary)
    if skipped:
        log(f"{out / SKIPPED}: the {len(skipped)} items and modalities left without features, each with the reason")
    return summary


def _encode_modality(
    modality: str,
    items: ItemsFile,
    images: list[Path | None] | None,
    chunk_size: int,
    batch_size: int,
    partial: Path,
    has: dict,
    skipped: list,
    log: Callable[[str], None],
    progress: bool,
) -> dict:
    """Encode the chunks not yet in `partial`, then assemble them into partial/ready/MODALITY.npy; fills
    has[modality] and `skipped`; returns the modality's summary."""
    n = len(items.rows)
    chunks = [range(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    paths = [partial / modality / f"{c:05d}.npz" for c in range(len(chunks))]
    done = sum(p.exists() for p in paths)
    if done:
        log(f"{modality}: {done} of {len(chunks)} chunks already encoded")
    encoder, seconds, encoded = None, 0.0, 0
    bar = tqdm(
        total=n,
        initial=sum(len(c) for c, p in zip(chunks, paths) if p.exists()),
        desc=f"encode {modality}",
        unit="item",
        disable=not progress,
    )
    for rows, path in zip(chunks, paths):
        if path.exists():
            continue
        encoder = encoder or ENCODERS[modality]()  # loaded only when something is left to encode
        start = time.perf_counter()
        features, reasons = _encode_chunk(modality, encoder, rows, items, images, batch_size)
        seconds += time.perf_counter() - start
        write_file_atomic(path, lambda p: _save_chunk(p, features, reasons))
        encoded += sum(not r for r in reasons)
        bar.update(len(rows))
    bar.close()

    write_file_atomic(
        partial / "ready" / f"{modality}.npy", lambda tmp: _assemble(tmp, modality, chunks, paths, items, has, skipped)
    )
    summary = {
        "dim": ENCODERS[modality].dim,
        "encoded": int(has[modality].sum()),
        "skipped": int((~has[modality]).sum()),
        "items_per_second": round(encoded / seconds, 1) if encoded else None,
    }
    made = partial.parent / f"{modality}.npy"
    log(
        f"{made}: {n} x {ENCODERS[modality].dim} ({ENCODERS[modality].name}); {summary['encoded']} encoded, "
        f"{summary['skipped']} without" + (f"; {encoded / seconds:.1f} items/s encoded by this run" if encoded else "")
    )
    return summary


def _assemble(
    tmp: Path, modality: str, chunks: list[range], paths: list[Path], items: ItemsFile, has: dict, skipped: list
) -> None:
    """The encoded chunks, one by one, into the memory-mapped .npy `tmp` (memory bounded by a chunk); fills
    has[modality] and `skipped`."""
    n = len(items.rows)
    matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, ENCODERS[modality].dim))
    for rows, path in zip(chunks, paths):
        with np.load(path) as chunk:
            matrix[rows.start : rows.stop] = chunk["features"]
            reasons = chunk["reasons"].tolist()
        has.setdefault(modality, np.zeros(n, dtype=bool))[rows.start : rows.stop] = [not r for r in reasons]
        skipped.extend((items.ids[rows.start + i], modality, r) for i, r in enumerate(reasons) if r)
    matrix.flush()
    del matrix


def _publish(out: Path, items: ItemsFile, modalities: list[str], has: dict, skipped: list, summary: dict) -> None:
    """Move the assembled outputs from out/.partial/ready into `out`, the summary last."""
    partial, ready = out / PARTIAL, out / PARTIAL / "ready"
    write_file_atomic(ready / ITEMS, lambda p: _write_items(p, items, has))
    write_file_atomic(
        ready / SKIPPED,
        lambda p: p.write_text(
            "item_id\tmodality\treason\n" + "".join(f"{i}\t{m}\t{r}\n" for i, m, r in skipped), encoding="utf-8"
        ),
    )
    # The summary goes first and comes back last, so a kill in between leaves no summary that vouches for a mix of
    # old and new outputs (the next run publishes again from the chunks kept).
    (out / SUMMARY).unlink(missing_ok=True)
    for name in [f"{m}.npy" for m in modalities] + [ITEMS, SKIPPED]:
        os.replace(ready / name, out / name)
    for stale in (f"{m}.npy" for m in ENCODERS if m not in modalities):
        (out / stale).unlink(missing_ok=True)
    write_file_atomic(out / SUMMARY, lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
    shutil.rmtree(partial)
