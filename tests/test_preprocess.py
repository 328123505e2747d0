"""`mmsr-dgl preprocess`: input formats, filtering, splits, modality codes, caching, errors, synthetic default."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_cli

from mmsr_dgl.data import PreprocessConfig, load_processed
from mmsr_dgl.data.preprocess import Inputs, preprocess
from mmsr_dgl.errors import UserError


def write_sequences(path, histories: dict) -> str:
    path.write_text("".join(f"{user} {' '.join(map(str, items))}\n" for user, items in histories.items()))
    return str(path)


def build(out, *args):
    """Run `preprocess --out OUT ARGS...`, expect success, return the loaded dataset."""
    result = run_cli("preprocess", "--out", out, *args)
    assert result.exit_code == 0, result.output
    return load_processed(out)


def raw_histories(data) -> list[list[str]]:
    return [data.item_ids[data.history(u)].tolist() for u in range(len(data.user_ids))]


def two_clusters(n_items: int, dim: int = 6, seed: int = 0) -> np.ndarray:
    """Feature rows of items 1..n: odd items near +e0, even items near -e0."""
    rng = np.random.default_rng(seed)
    x = 0.05 * rng.normal(size=(n_items, dim))
    x[:, 0] += np.where(np.arange(1, n_items + 1) % 2 == 1, 1.0, -1.0)
    return x.astype(np.float32)


def random_histories(n_users: int, n_items: int, length: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {u: rng.integers(1, n_items + 1, size=length).tolist() for u in range(1, n_users + 1)}


# --- input formats -----------------------------------------------------------------------------------------------


def test_sequences_keep_order_and_remap_ids_numerically(tmp_path):
    seq = write_sequences(tmp_path / "seq.txt", {7: [10, 9, 10, 9], 3: [9, 2]})
    data = build(tmp_path / "out", "--sequences", seq, "--set", "k_core=0")
    assert data.user_ids.tolist() == ["7", "3"]
    assert data.item_ids.tolist() == ["", "2", "9", "10"]  # numeric order, not "10" < "2"; 0 is padding
    assert data.seq_offsets.tolist() == [0, 4, 6]
    assert data.seq_items.tolist() == [3, 2, 3, 2, 2, 1]


INTERACTIONS = [
    ("u1", "a", 300),
    ("u1", "c", 100),
    ("u2", "c", 50),
    ("u1", "b", 100),
    ("u2", "a", 20),
    ("u1", "d", 400),
]


@pytest.mark.parametrize("kind", ["recbole", "amazon"])
def test_interactions_sorted_by_time_ties_in_file_order(tmp_path, kind):
    if kind == "recbole":
        path = tmp_path / "toys.inter"
        lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
        lines += [f"{u}\t{i}\t4.0\t{t}" for u, i, t in INTERACTIONS]
    else:
        path = tmp_path / "ratings.csv"
        lines = [f"{u},{i},4.0,{t}" for u, i, t in INTERACTIONS]
    path.write_text("\n".join(lines) + "\n")
    data = build(tmp_path / "out", "--interactions", path, "--set", "k_core=0")
    assert data.user_ids.tolist() == ["u1", "u2"]
    assert raw_histories(data) == [["c", "b", "a", "d"], ["a", "c"]]


def test_interaction_ids_that_are_not_ascii_digits_are_tokens(tmp_path):
    (tmp_path / "ratings.csv").write_text("u1,\u00b2,4,1\nu1,3,4,2\nu1,3,4,3\nu1,\u00b2,4,4\n")
    data = build(tmp_path / "out", "--interactions", tmp_path / "ratings.csv", "--set", "k_core=0")
    assert data.item_ids.tolist() == ["", "3", "\u00b2"]


# --- items file and features -------------------------------------------------------------------------------------


def test_items_file_aligns_features_and_marks_missing_modalities(tmp_path):
    n = 10
    order = [4, 1, 8, 3, 10, 6, 2, 9, 5, 7]  # items-file order; feature rows follow it
    x = two_clusters(n)[np.array(order) - 1]
    x[order.index(3)] = 0.0  # all-zero row: no image
    x[order.index(5)] = np.nan  # all-NaN row: no image
    has_image = {i: int(i != 7) for i in order}  # flagged missing despite a real feature row
    np.save(tmp_path / "image.npy", x)
    (tmp_path / "items.tsv").write_text(
        "item_id\tasin\thas_image\n" + "".join(f"{i}\tB{i:03d}\t{has_image[i]}\n" for i in order)
    )
    seq = write_sequences(tmp_path / "seq.txt", {1: list(range(1, 6)), 2: list(range(6, 11)), 3: [2, 4, 6]})
    data = build(
        tmp_path / "out",
        "--sequences",
        seq,
        "--items",
        tmp_path / "items.tsv",
        "--features",
        f"image={tmp_path / 'image.npy'}",
        "--set",
        "k_core=0",
        "--set",
        "n_codes=2",
        "--set",
        "codes_per_item=1",
    )
    assert data.item_asin.tolist() == [""] + [f"B{i:03d}" for i in range(1, n + 1)]
    codes = data.codes["image"][:, 0]
    missing = [0, 3, 5, 7]  # padding, zero row, NaN row, has_image=0
    assert (codes[missing] == -1).all()
    odd = [i for i in (1, 9) if i not in missing]
    even = [2, 4, 6, 8, 10]
    assert len(set(codes[odd])) == 1 and len(set(codes[even])) == 1 and codes[1] != codes[2]


def test_features_without_items_file_follow_item_ids(tmp_path):
    np.save(tmp_path / "text.npy", two_clusters(6))
    seq = write_sequences(tmp_path / "seq.txt", {1: [1, 2, 3, 4], 2: [4, 5, 6]})
    data = build(
        tmp_path / "out",
        "--sequences",
        seq,
        "--features",
        f"text={tmp_path / 'text.npy'}",
        "--set",
        "k_core=0",
        "--set",
        "n_codes=2",
        "--set",
        "codes_per_item=1",
    )
    codes = data.codes["text"][:, 0]
    assert codes[0] == -1 and len(set(codes[1::2])) == 1 and len(set(codes[2::2])) == 1 and codes[1] != codes[2]


# --- k-core and splits -------------------------------------------------------------------------------------------


def test_k_core_is_iterative(tmp_path):
    # k=2: item 3 occurs once, so user 3 drops to one interaction and is removed in a second pass.
    seq = write_sequences(tmp_path / "seq.txt", {1: [1, 2, 1, 2], 2: [2, 1], 3: [3, 1]})
    data = build(tmp_path / "k2", "--sequences", seq, "--set", "k_core=2")
    assert (len(data.user_ids), data.n_items - 1, len(data.seq_items)) == (2, 2, 6)
    data = build(tmp_path / "k0", "--sequences", seq, "--set", "k_core=0")
    assert (len(data.user_ids), data.n_items - 1, len(data.seq_items)) == (3, 3, 8)


def test_k_core_default_is_5(tmp_path):
    histories = {u: [1, 2, 3, 4, 5] for u in range(1, 7)}
    histories[1] = [1, 2, 6, 3, 4, 5]  # item 6 occurs once
    histories[7] = [1, 2, 3, 4]  # only four interactions
    data = build(tmp_path / "out", "--sequences", write_sequences(tmp_path / "seq.txt", histories))
    assert data.manifest["counts"] == {
        "users": 6,
        "items": 5,
        "interactions": 30,
        "train_samples": 12,
        "valid_samples": 6,
        "test_samples": 6,
        "read": {"users": 7, "items": 6, "interactions": 35},
    }
    assert "7" not in data.user_ids and "6" not in data.item_ids


SPLIT_CASES = {  # history lengths 5 and 10, test_ratio 0.38 (1.9 -> 2 and 3.8 -> 4 test positions)
    "loo": {
        "train": [(0, 1), (0, 2)] + [(1, p) for p in range(1, 8)],
        "valid": [(0, 3), (1, 8)],
        "test": [(0, 4), (1, 9)],
    },
    "ratio": {
        "train": [(0, 1)] + [(1, p) for p in range(1, 5)],
        "valid": [(0, 2), (1, 5)],
        "test": [(0, 3), (0, 4)] + [(1, p) for p in range(6, 10)],
    },
}


@pytest.mark.parametrize("split", SPLIT_CASES)
def test_split_positions(tmp_path, split):
    seq = write_sequences(tmp_path / "seq.txt", {1: list(range(1, 6)), 2: list(range(11, 21))})
    data = build(
        tmp_path / "out",
        "--sequences",
        seq,
        "--set",
        "k_core=0",
        "--set",
        f"split={split}",
        *(["--set", "test_ratio=0.38"] if split == "ratio" else []),
    )
    for name, expected in SPLIT_CASES[split].items():
        users, positions = data.splits[name]
        assert list(zip(users.tolist(), positions.tolist())) == expected, name
        assert data.manifest["counts"][f"{name}_samples"] == len(expected)


@pytest.mark.parametrize("split", ["loo", "ratio"])
def test_splits_of_every_history_length_follow_their_definition(split):
    from mmsr_dgl.data.preprocess import make_splits

    lengths = np.r_[np.arange(1, 40), np.random.default_rng(0).integers(1, 200, 300)]
    offsets = np.r_[0, np.cumsum(lengths)]
    splits = make_splits(offsets, split, 0.3)
    expected = {"train": [], "valid": [], "test": []}
    for user, n in enumerate(lengths):  # the definition, one user at a time
        first_test = n - (1 if split == "loo" else max(1, int(round(n * 0.3))))
        expected["test"] += [(user, p) for p in range(max(first_test, 1), n)]
        expected["valid"] += [(user, p) for p in range(max(first_test - 1, 1), first_test)]
        expected["train"] += [(user, p) for p in range(1, first_test - 1)]
    for name, pairs in expected.items():
        assert list(zip(*map(np.ndarray.tolist, splits[name]))) == pairs, name


def test_inputs_truncated_to_max_len(tmp_path):
    seq = write_sequences(tmp_path / "seq.txt", {1: list(range(1, 6)), 2: list(range(11, 21))})
    data = build(tmp_path / "out", "--sequences", seq, "--set", "k_core=0", "--set", "max_len=3")
    inputs = data.inputs(*data.splits["test"])
    assert [data.item_ids[i].tolist() for i in inputs] == [["2", "3", "4"], ["17", "18", "19"]]
    assert data.item_ids[data.targets("test")].tolist() == ["5", "20"]
    first = data.inputs(np.array([1]), np.array([1]))
    assert data.item_ids[first[0]].tolist() == ["11"]


# --- modality codes ----------------------------------------------------------------------------------------------


@pytest.fixture
def coded_inputs(tmp_path):
    """30 users over items 1..20 with random image features; items 21..24 occur only as last items."""
    histories = random_histories(30, 20, length=6)
    for u, item in zip(range(1, 5), range(21, 25)):
        histories[u][-1] = item
    np.save(tmp_path / "image.npy", np.random.default_rng(1).normal(size=(24, 16)).astype(np.float32))
    return [
        "--sequences",
        write_sequences(tmp_path / "seq.txt", histories),
        "--features",
        f"image={tmp_path / 'image.npy'}",
        "--set",
        "k_core=0",
        "--set",
        "n_codes=4",
        "--set",
        "codes_per_item=2",
        "--set",
        "pca_dim=5",
    ]


def test_codes_shape_centroids_and_determinism(tmp_path, coded_inputs):
    a = build(tmp_path / "a", *coded_inputs)
    b = build(tmp_path / "b", *coded_inputs)
    c = build(tmp_path / "c", *coded_inputs, "--set", "seed=1")
    codes = a.codes["image"]
    assert codes.shape == (a.n_items, 2) and a.n_items == 25
    assert (codes[0] == -1).all() and ((codes[1:] >= 0) & (codes[1:] < 4)).all()
    assert (codes[1:, 0] != codes[1:, 1]).all()
    assert a.centroids["image"].shape == (4, 5)
    features = a.features["image"]
    assert features.shape == (a.n_items, 5) and (features[0] == 0).all() and (np.abs(features[1:]).sum(1) > 0).all()
    # each item's first code is the centroid nearest to its reduced features
    dist = ((features[1:, None] - a.centroids["image"][None]) ** 2).sum(-1)
    np.testing.assert_array_equal(dist.argmin(1), codes[1:, 0])
    np.testing.assert_array_equal(codes, b.codes["image"])
    np.testing.assert_array_equal(a.centroids["image"], b.centroids["image"])
    assert not np.array_equal(a.centroids["image"], c.centroids["image"])


def test_nearest_codes_in_blocks_match_all_at_once():
    from mmsr_dgl.data.codes import _nearest

    rng = np.random.default_rng(0)
    x, centroids = rng.normal(size=(1000, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    dist = ((x[:, None] - centroids[None]) ** 2).sum(-1)
    expected = np.argsort(dist, axis=1)[:, :3]
    np.testing.assert_array_equal(_nearest(x, centroids, 3, rows=64), expected)
    np.testing.assert_array_equal(_nearest(x, centroids, 3, rows=64), _nearest(x, centroids, 3))


def test_fit_codes_on_train_uses_training_items_only(tmp_path, coded_inputs):
    every = build(tmp_path / "all", *coded_inputs).manifest["code_stats"]["image"]
    data = build(tmp_path / "train", *coded_inputs, "--set", "fit_codes_on_train=true")
    train = data.manifest["code_stats"]["image"]
    assert every["items_fitted"] == every["items_with_modality"] == 24
    assert train["items_with_modality"] == 24
    assert train["items_fitted"] == int((data.train_popularity()[1:] > 0).sum()) <= 20
    assert (data.codes["image"][1:] >= 0).all()  # unfitted items still get codes


# --- manifest, caching, atomic output ----------------------------------------------------------------------------


def test_manifest_records_settings_inputs_counts_and_versions(tmp_path, coded_inputs):
    data = build(tmp_path / "out", *coded_inputs, "--set", "max_len=7")
    m = data.manifest
    assert m["settings"]["max_len"] == 7 and m["settings"]["n_codes"] == 4 and m["settings"]["k_core"] == 0
    seq = coded_inputs[1]
    described = m["inputs"]["files"]["sequences"]
    assert described["sha256"] == hashlib.sha256(open(seq, "rb").read()).hexdigest()
    assert described["bytes"] == os.path.getsize(seq)
    assert set(m["inputs"]["files"]) == {"sequences", "features.image"}
    assert m["counts"]["users"] == 30 and m["counts"]["interactions"] == 180
    assert m["modalities"] == ["image"] and m["code_stats"]["image"]["n_codes"] == 4
    assert m["versions"]["numpy"] == np.__version__ and "mmsr_dgl" in m["versions"]


def test_rerun_is_up_to_date_until_a_setting_or_input_changes(tmp_path):
    seq = tmp_path / "seq.txt"
    write_sequences(seq, random_histories(10, 6, length=5))
    out = tmp_path / "out"
    build(out, "--sequences", seq, "--set", "k_core=0")
    stamp = {f: (out / f).stat().st_mtime_ns for f in ("data.npz", "manifest.json")}

    again = run_cli("preprocess", "--out", out, "--sequences", seq, "--set", "k_core=0")
    assert again.exit_code == 0 and "up to date" in again.stderr
    assert {f: (out / f).stat().st_mtime_ns for f in stamp} == stamp

    changed = run_cli("preprocess", "--out", out, "--sequences", seq, "--set", "k_core=0", "--set", "max_len=9")
    assert changed.exit_code == 0 and "up to date" not in changed.stderr
    assert load_processed(out).max_len == 9

    with seq.open("a") as handle:
        handle.write("99 1 2 3\n")
    data = build(out, "--sequences", seq, "--set", "k_core=0", "--set", "max_len=9")
    assert len(data.user_ids) == 11


def _set_format_version(out, version):
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = version
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_a_dataset_of_an_earlier_format_is_refused_then_rebuilt(tmp_path):
    from mmsr_dgl.data.preprocess import FORMAT_VERSION

    assert FORMAT_VERSION == 3
    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    out = tmp_path / "out"
    build(out, "--sequences", seq, "--set", "k_core=0")
    _set_format_version(out, 2)
    with pytest.raises(UserError) as err:
        load_processed(out)
    message = str(err.value)
    assert str(out) in message and "made by an earlier version" in message and "mmsr-dgl preprocess" in message
    result = run_cli("train", "--data", out, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output and "earlier version" in result.output
    assert not (tmp_path / "run" / "config.yaml").exists()
    again = run_cli("preprocess", "--out", out, "--sequences", seq, "--set", "k_core=0")  # the same settings
    assert again.exit_code == 0 and "up to date" not in again.stderr
    assert load_processed(out).manifest["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize("version, fragment", [(4, "newer mmsr-dgl"), (None, "not an mmsr-dgl dataset manifest")])
def test_a_dataset_of_a_newer_or_no_format_is_refused(tmp_path, version, fragment):
    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    out = tmp_path / "out"
    build(out, "--sequences", seq, "--set", "k_core=0")
    _set_format_version(out, version)
    with pytest.raises(UserError, match=fragment):
        load_processed(out)


def test_failed_run_keeps_earlier_output(tmp_path):
    seq = tmp_path / "seq.txt"
    write_sequences(seq, random_histories(10, 6, length=5))
    out = tmp_path / "out"
    build(out, "--sequences", seq, "--set", "k_core=0")
    before = {f: (out / f).read_bytes() for f in ("data.npz", "manifest.json")}

    seq.write_text("1 2 3\n2 x\n")
    result = run_cli("preprocess", "--out", out, "--sequences", seq, "--set", "k_core=0")
    assert result.exit_code == 2
    assert {f: (out / f).read_bytes() for f in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "seq.txt"]


def test_failure_while_writing_keeps_earlier_output(tmp_path, monkeypatch):
    seq = tmp_path / "seq.txt"
    write_sequences(seq, random_histories(10, 6, length=5))
    out = tmp_path / "out"
    preprocess(PreprocessConfig(k_core=0), Inputs(sequences=seq), out, log=lambda m: None)
    before = (out / "manifest.json").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError):
        preprocess(PreprocessConfig(k_core=0, max_len=9), Inputs(sequences=seq), out, log=lambda m: None)
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "seq.txt"]  # no temporary directory left


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="preprocess did not write"):
        preprocess(PreprocessConfig(k_core=0), Inputs(sequences=seq), tmp_path / "out", log=lambda m: None)
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep me"


# --- bad input ---------------------------------------------------------------------------------------------------

GOOD_SEQ = "1 1 2 3\n2 2 3 1\n3 3 1 2\n"


def _seq(tmp_path, text=GOOD_SEQ):
    path = tmp_path / "seq.txt"
    path.write_text(text)
    return ["--sequences", path, "--set", "k_core=0"]


def _features(tmp_path, matrix, items=True):
    np.save(tmp_path / "image.npy", np.asarray(matrix, dtype=np.float32))
    args = _seq(tmp_path) + ["--features", f"image={tmp_path / 'image.npy'}"]
    if items:
        args += ["--items", _items(tmp_path, "item_id\n1\n2\n3\n")]
    return args


def _config(tmp_path, text):
    (tmp_path / "config.yaml").write_text(text)
    return _seq(tmp_path) + ["--config", tmp_path / "config.yaml"]


def _items(tmp_path, text):
    (tmp_path / "items.tsv").write_text(text)
    return tmp_path / "items.tsv"


def _binary(path, data=b"\xff\xfe\x00binary\n"):
    path.write_bytes(data)
    return path


def _ratings(tmp_path, text):
    (tmp_path / "ratings.csv").write_text(text)
    return tmp_path / "ratings.csv"


BAD_INPUTS = {  # name -> (args builder, fragments the error message must contain)
    "malformed line": (lambda p: _seq(p, "1 1 2\n2\n"), ["seq.txt", "line 2", "expected 'user item"]),
    "non-integer id": (lambda p: _seq(p, "1 1 2\n2 3 x4\n"), ["seq.txt", "line 2", "'x4'"]),
    "non-ASCII digit id": (lambda p: _seq(p, "1 1 2\n2 3 \u00b2\n"), ["seq.txt", "line 2", "'\u00b2'"]),
    "repeated user": (lambda p: _seq(p, "1 1 2\n1 3 4\n"), ["seq.txt", "line 2", "more than one line"]),
    "not UTF-8 text": (lambda p: _seq(p) + ["--items", _binary(p / "items.tsv")], ["items.tsv", "UTF-8"]),
    "config not UTF-8": (lambda p: _seq(p) + ["--config", _binary(p / "config.yaml")], ["config.yaml", "UTF-8"]),
    "unknown item": (
        lambda p: _seq(p) + ["--items", _items(p, "item_id\n1\n2\n")],
        ["seq.txt, line 1", "item '3'", "items.tsv"],
    ),
    "bad has_ flag": (
        lambda p: _seq(p) + ["--items", _items(p, "item_id\thas_image\n1\t1\n2\tyes\n3\t0\n")],
        ["items.tsv", "line 3", "has_image"],
    ),
    "wrong row count": (lambda p: _features(p, np.eye(4)), ["image.npy", "4 rows", "3 items"]),
    "too few rows without items file": (
        lambda p: _features(p, np.eye(2), items=False),
        ["seq.txt, line 1", "item '3'", "image.npy"],
    ),
    "NaN in part of a row": (lambda p: _features(p, [[1, 2], [3, np.nan], [5, 6]]), ["image.npy", "row 1", "NaN"]),
    "empty .npy file": (
        lambda p: _seq(p) + ["--features", f"image={_binary(p / 'image.npy', b'')}"],
        ["image.npy", "not a readable .npy"],
    ),
    "infinite value": (lambda p: _features(p, [[1, 2], [3, 4], [np.inf, 6]]), ["image.npy", "row 2", "infinite"]),
    "empty after k-core": (lambda p: _seq(p) + ["--set", "k_core=4"], ["4-core", "k_core"]),
    "missing file": (lambda p: ["--sequences", p / "nothere.txt"], ["nothere.txt", "not found"]),
    "unknown --set key": (lambda p: _seq(p) + ["--set", "k_cores=3"], ["k_cores", "unknown setting"]),
    "wrong-typed --set value": (lambda p: _seq(p) + ["--set", "k_core=five"], ["k_core", "integer", "five"]),
    "out-of-range --set value": (lambda p: _seq(p) + ["--set", "max_len=0"], ["max_len", "out of range"]),
    "unknown key in --config": (lambda p: _config(p, "k_core: 0\nbogus: 1\n"), ["config.yaml", "'bogus'"]),
    "wrong type in --config": (lambda p: _config(p, "split: random\n"), ["config.yaml", "split", "'random'"]),
    "bad timestamp": (
        lambda p: ["--interactions", _ratings(p, "u1,a,5,1\nu1,b,5,yesterday\n")],
        ["ratings.csv", "line 2", "timestamp"],
    ),
    "short CSV row": (lambda p: ["--interactions", _ratings(p, "u1,a,5\n")], ["ratings.csv", "line 1"]),
    "two input kinds": (lambda p: _seq(p) + ["--synthetic"], ["exactly one of"]),
    "empty id in CSV": (
        lambda p: ["--interactions", _ratings(p, "u1,a,5,1\nu1,,5,2\n")],
        ["ratings.csv", "line 2", "empty"],
    ),
    "unknown item in CSV": (
        lambda p: ["--interactions", _ratings(p, "u1,a,5,1\nu2,zz,5,2\n"), "--items", _items(p, "item_id\na\n")],
        ["ratings.csv", "user u2 (first at line 2)", "'zz'"],
    ),
    "bad synthetic setting": (
        lambda p: ["--synthetic", "--set", "synthetic.mean_length=2"],
        ["synthetic.mean_length", "out of range"],
    ),
    "negative noise": (lambda p: ["--synthetic", "--set", "synthetic.noise=-1"], ["synthetic.noise"]),
    "modality named item": (lambda p: _seq(p) + ["--features", f"item={p / 'x.npy'}"], ["'item'"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_clean_error(tmp_path, case):
    make_args, fragments = BAD_INPUTS[case]
    result = run_cli("preprocess", "--out", tmp_path / "out", *make_args(tmp_path))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    error = result.stderr.splitlines()[-1]  # progress lines may come before it
    assert error.startswith("error: ")
    for fragment in fragments:
        assert fragment in error
    assert not (tmp_path / "out").exists()


def test_real_process_prints_no_traceback(tmp_path):
    (tmp_path / "seq.txt").write_text("1 1 2\n2 3 x4\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "preprocess",
            "--sequences",
            tmp_path / "seq.txt",
            "--out",
            tmp_path / "out",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "line 2" in proc.stderr and proc.stdout == ""


# --- the synthetic default ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_default(tmp_path_factory):
    return build(tmp_path_factory.mktemp("default") / "out", "--synthetic")


def hit_rate_at_10(scores: np.ndarray, targets: np.ndarray) -> float:
    scores = scores.astype(np.float64)
    scores[:, 0] = -np.inf  # padding
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return float((top == targets[:, None]).any(1).mean())


def training_transitions(data) -> tuple[np.ndarray, np.ndarray]:
    users, positions = data.splits["train"]
    at = data.seq_offsets[users] + positions
    return data.seq_items[at - 1], data.seq_items[at]


def test_synthetic_default_has_both_modalities_with_some_missing(synthetic_default):
    data = synthetic_default
    assert data.manifest["counts"]["users"] == 3000 and data.manifest["counts"]["items"] > 500
    assert data.modalities == ["image", "text"]
    for codes in data.codes.values():
        missing = (codes[1:] == -1).all(1)
        assert 0 < missing.sum() < 0.1 * len(missing)


def test_synthetic_next_item_is_predictable_from_last_item(synthetic_default):
    data = synthetic_default
    prev, nxt = training_transitions(data)
    counts = np.zeros((data.n_items, data.n_items))
    np.add.at(counts, (prev, nxt), 1)
    users, positions = data.splits["valid"]
    last = data.seq_items[data.seq_offsets[users] + positions - 1]
    targets = data.targets("valid")
    popularity = data.train_popularity()
    pop_hr = hit_rate_at_10(np.tile(popularity, (len(targets), 1)), targets)
    transition_hr = hit_rate_at_10(counts[last] + 1e-6 * popularity, targets)  # popularity breaks ties
    assert transition_hr > 2 * pop_hr and transition_hr > 0.3


def test_synthetic_image_codes_carry_group_signal(synthetic_default):
    data = synthetic_default
    prev, nxt = training_transitions(data)
    code = data.codes["image"][:, 0]
    both = (code[prev] >= 0) & (code[nxt] >= 0)
    prev, nxt = prev[both], nxt[both]
    same_code = (code[prev] == code[nxt]).mean()
    shuffled = (code[prev] == code[np.random.default_rng(0).permutation(nxt)]).mean()
    assert same_code > 3 * shuffled


def test_shared_synthetic_fixture(synthetic_data_dir):
    data = load_processed(synthetic_data_dir)
    assert 250 <= len(data.user_ids) <= 300 and data.modalities == ["image", "text"]
    assert data.centroids["image"].shape[0] == 16
    assert len(data.splits["valid"][0]) == len(data.user_ids)


# --- Amazon Toys -------------------------------------------------------------------------------------------------


def test_amazon_toys(tmp_path, toys_dir):
    data = build(
        tmp_path / "toys",
        "--sequences",
        toys_dir / "sequences.txt",
        "--items",
        toys_dir / "items.tsv",
        "--features",
        f"image={toys_dir / 'image_clip_vitb32.npy'}",
        "--features",
        f"text={toys_dir / 'text_clip_vitb32.npy'}",
    )
    counts = data.manifest["counts"]
    assert (counts["users"], counts["items"], counts["interactions"]) == (19412, 11924, 167597)
    no_image = np.flatnonzero((data.codes["image"] == -1).all(1))
    no_text = np.flatnonzero((data.codes["text"] == -1).all(1))
    assert no_image[0] == 0 and len(no_image[1:]) == 17
    assert no_text.tolist() == [0]
    flags = {}
    with open(toys_dir / "items.tsv") as handle:
        next(handle)
        for line in handle:
            item, _, has_image, _ = line.split("\t", 3)
            flags[item] = has_image
    assert {flags[i] for i in data.item_ids[no_image[1:]]} == {"0"}


def test_a_folder_with_someone_elses_manifest_is_not_replaced(tmp_path):
    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    web = tmp_path / "webapp"
    (web / "src").mkdir(parents=True)
    (web / "manifest.json").write_text('{"name": "x"}')
    (web / "index.html").write_text("hi")
    result = run_cli("preprocess", "--sequences", seq, "--set", "k_core=0", "--out", web)
    assert result.exit_code == 2 and "preprocess did not write" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in web.iterdir()) == ["index.html", "manifest.json", "src"]
    assert (web / "manifest.json").read_text() == '{"name": "x"}'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".webapp")] == []


def test_a_dataset_folder_holding_other_files_is_not_replaced(tmp_path):
    """A run trained into a dataset folder (or any file of the user's there) survives the next preprocess."""
    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    out = tmp_path / "out"
    build(out, "--sequences", seq, "--set", "k_core=0")
    (out / "run").mkdir()
    (out / "run" / "best.pt").write_bytes(b"weights")
    result = run_cli("preprocess", "--sequences", seq, "--set", "k_core=0", "--set", "max_len=9", "--out", out)
    assert result.exit_code == 2 and "preprocess did not write (run)" in result.output
    assert (out / "run" / "best.pt").read_bytes() == b"weights"
    assert load_processed(out).max_len != 9


def test_a_dataset_without_training_samples_is_refused(tmp_path):
    seq = tmp_path / "two.txt"
    seq.write_text("1 1 2\n2 2 3\n3 3 1\n4 1 3\n")
    result = run_cli("preprocess", "--sequences", seq, "--set", "k_core=0", "--out", tmp_path / "td")
    assert result.exit_code == 2 and "no training samples" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "td").exists()


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("killed", ["writing", "after moving the old output aside", "before removing the old"])
def test_a_kill_at_any_step_of_the_replace_leaves_one_whole_output(tmp_path, killed):
    """The directories a kill -9 leaves at each step of replace_directory (named by the dead process's PID), and
    the next preprocess: it finds the earlier or the new output whole, removes the leftovers, and works."""
    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    out = tmp_path / "out"
    build(out, "--sequences", seq, "--set", "k_core=0")
    before = (out / "data.npz").read_bytes()
    pid = _dead_pid()
    tmp = tmp_path / f".out.tmp-{pid}-abc"
    old = tmp_path / f".out.old-{pid}-def"
    tmp.mkdir()
    (tmp / "data.npz").write_bytes(b"half written")
    if killed == "after moving the old output aside":
        out.rename(old)
    elif killed == "before removing the old":
        old.mkdir()
        (old / "data.npz").write_bytes(b"the earlier output")
    again = run_cli("preprocess", "--sequences", seq, "--set", "k_core=0", "--out", out)
    assert again.exit_code == 0, again.output
    assert "up to date" in again.stderr  # the earlier output is back (or was never gone)
    assert (out / "data.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "seq.txt"]


def test_leftovers_of_a_live_process_are_left_alone(tmp_path):
    from mmsr_dgl.io import recover

    out = tmp_path / "out"
    out.mkdir()
    alive = tmp_path / f".out.tmp-{os.getppid()}-xyz"
    alive.mkdir()
    recover(out)
    assert alive.is_dir()


@pytest.mark.parametrize("damage", ["truncated", "deleted", "same size, other bytes", "rewritten"])
def test_a_damaged_data_file_is_named_and_rebuilt(tmp_path, damage):
    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    out = tmp_path / "out"
    build(out, "--sequences", seq, "--set", "k_core=0")
    good = (out / "data.npz").read_bytes()
    if damage == "truncated":
        (out / "data.npz").write_bytes(good[: len(good) // 2])
    elif damage == "deleted":
        (out / "data.npz").unlink()
    elif damage == "same size, other bytes":
        (out / "data.npz").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    else:
        with np.load(out / "data.npz") as arrays:
            arrays = {k: v for k, v in arrays.items() if k != "seq_items"}
        np.savez(out / "data.npz", **arrays)
    if damage != "same size, other bytes":  # a flipped byte loads; the checksum finds it when preprocess checks
        result = run_cli("train", "--data", out, "--out", tmp_path / "run")
        assert result.exit_code == 2 and "data.npz" in result.output and "preprocess` again" in result.output
        assert "Traceback" not in result.output
    again = run_cli("preprocess", "--sequences", seq, "--set", "k_core=0", "--out", out)
    assert again.exit_code == 0 and "building it again" in again.stderr and "up to date" not in again.stderr
    assert (out / "data.npz").read_bytes() == good  # deterministic: the same file as before


def test_force_rebuilds_an_up_to_date_dataset(tmp_path):
    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    out = tmp_path / "out"
    build(out, "--sequences", seq, "--set", "k_core=0")
    created = load_processed(out).manifest["created"]
    stamp = (out / "data.npz").stat().st_mtime_ns
    again = run_cli("preprocess", "--sequences", seq, "--set", "k_core=0", "--out", out, "--force")
    assert again.exit_code == 0 and "up to date" not in again.stderr
    assert (out / "data.npz").stat().st_mtime_ns != stamp or load_processed(out).manifest["created"] != created


def test_a_data_file_lacking_an_array_is_named(tmp_path):
    import json

    from mmsr_dgl.data.preprocess import describe_file

    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    out = tmp_path / "out"
    build(out, "--sequences", seq, "--set", "k_core=0")
    with np.load(out / "data.npz") as arrays:
        arrays = {k: v for k, v in arrays.items() if k != "valid_pos"}
    np.savez(out / "data.npz", **arrays)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["data_file"] = describe_file(out / "data.npz")  # as if the manifest agreed with it
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="lacks the arrays valid_pos"):
        load_processed(out)


def test_feature_files_that_are_not_one_npy_matrix_are_named(tmp_path):
    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    np.savez(tmp_path / "f.npz", a=np.zeros((6, 4)))
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000), }"
    header += " " * (117 - len(header)) + "\n"
    (tmp_path / "huge.npy").write_bytes(
        b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64
    )  # claims 4 TB, holds 64 bytes
    for name, message in (("f.npz", "an .npz archive"), ("huge.npy", "shorter than its header says")):
        result = run_cli(
            "preprocess",
            "--sequences",
            seq,
            "--set",
            "k_core=0",
            "--features",
            f"image={tmp_path / name}",
            "--out",
            tmp_path / "out",
        )
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_synthetic_settings_are_one_group_in_a_file_and_on_the_command_line(tmp_path):
    from mmsr_dgl.config import build_config

    (tmp_path / "s.yaml").write_text("synthetic:\n  users: 400\n  seed: 3\nk_core: 2\n")
    config = build_config(PreprocessConfig, tmp_path / "s.yaml", ["synthetic.items=100", "synthetic.seed=4"])
    assert (config.synthetic.users, config.synthetic.items, config.synthetic.seed, config.k_core) == (400, 100, 4, 2)
    assert config.synthetic.groups == PreprocessConfig().synthetic.groups  # the rest keep their defaults
    (tmp_path / "bad.yaml").write_text("synthetic: 5\n")
    for file, overrides, message in (
        (tmp_path / "bad.yaml", [], "setting 'synthetic' in"),
        (None, ["synthetic.colour=red"], "unknown setting"),
        (None, ["synthetic=5"], "unknown setting"),
        (None, ["synthetic.users=0"], "'synthetic.users': value 0 is out of range"),
    ):
        with pytest.raises(UserError, match=message):
            build_config(PreprocessConfig, file, overrides)


def test_feature_rows_beyond_the_items_are_reported_and_a_padding_row_refused(tmp_path):
    seq = write_sequences(tmp_path / "seq.txt", {1: [1, 2, 3, 4, 5], 2: [5, 4, 3, 2, 1]})  # items 1..5
    rng = np.random.default_rng(0)
    padded = np.concatenate([np.zeros((1, 4)), rng.normal(size=(5, 4))])  # row 0 for padding, as many codes save
    np.save(tmp_path / "padded.npy", padded)
    np.save(tmp_path / "longer.npy", rng.normal(size=(8, 4)))  # a catalogue of 8 items, 5 of them in the histories
    args = ["--sequences", seq, "--set", "k_core=0", "--set", "n_codes=2", "--set", "codes_per_item=1"]
    refused = run_cli("preprocess", *args, "--features", f"image={tmp_path / 'padded.npy'}", "--out", tmp_path / "a")
    assert refused.exit_code == 2 and "padding row" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "a").exists()
    kept = run_cli("preprocess", *args, "--features", f"image={tmp_path / 'longer.npy'}", "--out", tmp_path / "b")
    assert kept.exit_code == 0, kept.output
    assert "longer.npy: the last 3 rows are not used (no item id above 5 in the histories)" in kept.output


def test_a_feature_file_cut_short_while_it_is_read_is_an_error_not_a_crash(tmp_path):
    # in a process of its own: the file is cut short right after its header was read, as a copy still being written
    # may be; reading the rest through a memory map would end the process by SIGBUS, without a word
    np.save(tmp_path / "f.npy", np.ones((4096, 256), dtype=np.float32))
    script = f"""
import numpy as np
from mmsr_dgl.data.readers import read_features
from mmsr_dgl.errors import UserError

load = np.load
def load_then_cut(path, *args, **kwargs):
    array = load(path, *args, **kwargs)
    with open(path, "r+b") as f:
        f.truncate(4096)
    return array
np.load = load_then_cut
try:
    read_features({str(tmp_path / "f.npy")!r}, "image", None)
except UserError as err:
    print("error:", err)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"status {result.returncode}: {result.stderr}"
    assert "f.npy: changed while it was being read" in result.stdout, result.stdout


def test_integer_ids_beyond_int64_sort_numerically(tmp_path):
    seq = tmp_path / "big.txt"
    seq.write_text(f"1 {2**64} 2 {2**63} 4\n2 2 3 4 5\n")
    data = build(tmp_path / "out", "--sequences", seq, "--set", "k_core=0")
    assert data.item_ids.tolist() == ["", "2", "3", "4", "5", str(2**63), str(2**64)]


def test_integer_ids_are_one_id_whatever_their_zeros(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("\ufeff1 007 7 08 9\n002 7 8 9 8\n")  # a UTF-8 BOM first, as some editors write it
    data = build(tmp_path / "out", "--sequences", seq, "--set", "k_core=0")
    assert data.user_ids.tolist() == ["1", "2"] and data.item_ids.tolist() == ["", "7", "8", "9"]
    items = tmp_path / "items.tsv"
    items.write_text("item_id\ttitle\n07\ta\n8\tb\n9\tc\n")
    data = build(tmp_path / "out2", "--sequences", seq, "--items", items, "--set", "k_core=0")
    assert data.item_ids.tolist() == ["", "7", "8", "9"]
    items.write_text("item_id\n07\n7\n8\n9\n")
    result = run_cli("preprocess", "--sequences", seq, "--items", items, "--set", "k_core=0", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "appears twice" in result.output


def test_what_would_be_silently_wrong_is_said_or_refused(tmp_path):
    seq = write_sequences(tmp_path / "seq.txt", random_histories(10, 6, length=5))
    items = tmp_path / "items.tsv"
    items.write_text("item_id\ttitle\tprice\n" + "".join(f"{i}\tt\t1\n" for i in range(1, 7)))
    np.save(tmp_path / "c.npy", np.ones((6, 4), dtype=np.complex64))
    np.save(tmp_path / "f.npy", two_clusters(6))
    said = run_cli(
        "preprocess",
        "--sequences",
        seq,
        "--items",
        items,
        "--features",
        f"image={tmp_path / 'f.npy'}",
        "--set",
        "k_core=0",
        "--set",
        "n_codes=50",
        "--out",
        tmp_path / "a",
    )
    assert said.exit_code == 0, said.output
    assert "columns title, price are not used" in said.stderr and "(n_codes=50)" in said.stderr
    for args, message in (
        (["--features", f"image={tmp_path / 'c.npy'}"], "complex numbers"),
        (["--set", "synthetic.users=5"], "apply to --synthetic only"),
    ):
        result = run_cli(
            "preprocess", "--sequences", seq, "--items", items, "--set", "k_core=0", *args, "--out", tmp_path / "b"
        )
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    config = tmp_path / "c.yaml"
    config.write_text("k_core: 0\nmax_len: 5\nk_core: 2\n")
    result = run_cli("preprocess", "--sequences", seq, "--config", config, "--out", tmp_path / "c")
    assert result.exit_code == 2 and "'k_core' given twice" in result.output
