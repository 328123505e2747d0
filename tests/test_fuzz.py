"""Any bytes as an input file load or raise the project's named error: no other exception, no partial output."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the test extra: pip install -e '.[test]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mmsr_dgl.data.preprocess import Inputs, PreprocessConfig, preprocess  # noqa: E402
from mmsr_dgl.data.readers import read_features, read_interactions, read_items, read_sequences  # noqa: E402
from mmsr_dgl.errors import UserError  # noqa: E402

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# text close to the formats, so that examples get past the first checks, and raw bytes
TEXTISH = st.text(alphabet="0123456789 \t\n,:.-eE+xabu\ufeff\u00e9", max_size=300).map(str.encode)
INTER = st.builds(
    lambda head, body: head + body,
    st.sampled_from([b"", b"user_id:token\titem_id:token\ttimestamp:float\n", b"u,i,r,t\n"]),
    TEXTISH | st.binary(max_size=300),
)
ITEMS = st.builds(
    lambda head, body: head + body,
    st.sampled_from([b"", b"item_id\n", b"item_id\tasin\thas_image\n"]),
    TEXTISH | st.binary(max_size=300),
)


def npy_bytes(data: bytes, header_shape: tuple[int, ...] | None) -> bytes:
    if header_shape is None:
        return data
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": header_shape})
    return buffer.getvalue() + data


def loads_or_names_the_error(reader, path: Path, *args) -> None:
    try:
        reader(path, *args)
    except UserError as err:
        assert str(path) in str(err)


@FUZZ
@given(content=TEXTISH | st.binary(max_size=300))
def test_sequences_file(tmp_path, content):
    (tmp_path / "seq.txt").write_bytes(content)
    loads_or_names_the_error(read_sequences, tmp_path / "seq.txt")


@FUZZ
@given(content=INTER, name=st.sampled_from(["x.inter", "ratings.csv"]))
def test_interactions_file(tmp_path, content, name):
    (tmp_path / name).write_bytes(content)
    loads_or_names_the_error(read_interactions, tmp_path / name)


@FUZZ
@given(content=ITEMS)
def test_items_file(tmp_path, content):
    (tmp_path / "items.tsv").write_bytes(content)
    loads_or_names_the_error(read_items, tmp_path / "items.tsv")


@FUZZ
@given(
    data=st.binary(max_size=200),
    shape=st.none() | st.tuples(st.integers(0, 10**12), st.integers(0, 10**6)) | st.tuples(st.integers(0, 50)),
)
def test_feature_file(tmp_path, data, shape):
    (tmp_path / "f.npy").write_bytes(npy_bytes(data, shape))
    loads_or_names_the_error(read_features, tmp_path / "f.npy", "image", None)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=TEXTISH)
def test_preprocess_leaves_a_dataset_or_nothing(tmp_path, content):
    """The whole pipeline on a fuzzed sequences file: a dataset, or a named error and no output or temporary
    folder at all."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    for leftover in work.iterdir():
        leftover.unlink() if leftover.is_file() else shutil.rmtree(leftover)
    (work / "seq.txt").write_bytes(content)
    try:
        preprocess(PreprocessConfig(k_core=0), Inputs(sequences=work / "seq.txt"), work / "out", log=lambda m: None)
    except UserError:
        assert sorted(p.name for p in work.iterdir()) == ["seq.txt"]
    else:
        assert sorted(p.name for p in (work / "out").iterdir()) == ["data.npz", "manifest.json"]
