"""Every command, given bad arguments in a folder of a user's work: exit status 2 with a one-line message (or,
where the arguments happen to be valid, success), never a traceback, and nothing outside the command's own
output changed."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the test extra: pip install -e '.[test]'")
from click.testing import CliRunner  # noqa: E402
from conftest import snapshot  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cli.main import main  # noqa: E402
from mmsr_dgl.config import setting_types  # noqa: E402
from mmsr_dgl.data.preprocess import PreprocessConfig  # noqa: E402
from mmsr_dgl.training import TrainConfig  # noqa: E402

HARNESS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TINY = [
    "--set",
    "synthetic.users=150",
    "--set",
    "synthetic.items=60",
    "--set",
    "synthetic.groups=4",
    "--set",
    "n_codes=8",
    "--set",
    "pca_dim=8",
]
BAD = st.sampled_from(
    [
        "-1",
        "0",
        "1e12",
        "-1e12",
        "nan",
        "inf",
        "",
        "[]",
        "{}",
        "[1, 2",
        "true",
        "null",
        "abc",
        "'",
        "\x01",
        "7" * 5000,
        "[image, image]",
        "[video]",
        "-0.5",
        "1.5",
        "{a: 1}",
        "*a",
        "../..",
        "/dev/null",
        "0x10",
    ]
)
PATHS = st.sampled_from(
    [
        "",
        ".",
        "..",
        "/",
        "/dev/null",
        "missing/file",
        "data",
        "data/data.npz",
        "run",
        "run/best.pt",
        "run/config.yaml",
        "seq.txt",
        "link",
        "fifo",
        "a\tb",
        "x" * 300,
    ]
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A user's folder: a sequences file, a dataset, a run, a symbolic link and a FIFO."""
    root = tmp_path_factory.mktemp("scratch")
    runner = CliRunner()
    assert runner.invoke(main, ["preprocess", "--synthetic", "--out", str(root / "data"), *TINY]).exit_code == 0
    assert (
        runner.invoke(
            main, ["train", "--data", str(root / "data"), "--out", str(root / "run"), "--epochs", "1", "--set", "dim=8"]
        ).exit_code
        == 0
    )
    (root / "seq.txt").write_text("".join(f"{u} 1 2 3 4 5\n" for u in range(1, 20)))
    (root / "link").symlink_to(root / "seq.txt")
    os.mkfifo(root / "fifo")
    return root


def invoke(scratch: Path, args: list[str], out: str | None) -> None:
    """Run `args` in `scratch`; asserts the harness's guarantees and removes what a success wrote to `out`."""
    before = snapshot(scratch)
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        result = CliRunner().invoke(main, args)
    finally:
        os.chdir(cwd)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not crashed and result.exit_code in (0, 2), (args, result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.output.startswith("error: ") or "Usage:" in result.output, result.output
    after = snapshot(scratch)
    if out and result.exit_code == 0:  # the command's own output: compared apart; removed when new
        top = scratch / Path(out).parts[0]
        existed = top.name in before
        for key in [k for k in {**before, **after} if (scratch / k) == top or top in (scratch / k).parents]:
            after.pop(key, None)
            before.pop(key, None)
        if not existed and top.is_dir() and not top.is_symlink():
            shutil.rmtree(top)
        elif not existed and top.exists():
            top.unlink()
    assert after == before, args


@HARNESS
@given(key=st.sampled_from(sorted(setting_types(PreprocessConfig))), value=BAD)
def test_preprocess_with_a_bad_setting(scratch, key, value):
    invoke(scratch, ["preprocess", "--synthetic", "--out", "new-data", *TINY, "--set", f"{key}={value}"], "new-data")


@HARNESS
@given(
    option=st.sampled_from(["--sequences", "--interactions", "--items", "--features", "--out", "--config"]), path=PATHS
)
def test_preprocess_with_a_bad_path(scratch, option, path):
    args = {
        "--sequences": ["--sequences", path],
        "--interactions": ["--interactions", path],
        "--items": ["--sequences", "seq.txt", "--items", path],
        "--features": ["--sequences", "seq.txt", "--features", f"image={path}"],
        "--config": ["--sequences", "seq.txt", "--config", path],
    }.get(option, ["--sequences", "seq.txt"])
    out = path if option == "--out" and path != "data" else "new-data"  # `data` is a dataset it may replace
    invoke(scratch, ["preprocess", *args, "--out", out, "--set", "k_core=0"], out)


@HARNESS
@given(key=st.sampled_from([f.name for f in dataclasses.fields(TrainConfig)]), value=BAD)
def test_train_with_a_bad_setting(scratch, key, value):
    invoke(
        scratch,
        ["train", "--data", "data", "--out", "new-run", "--set", "dim=8", "--set", f"{key}={value}", "--epochs", "1"],
        "new-run",
    )


@HARNESS
@given(option=st.sampled_from(["--data", "--out", "--config", "--resume", "--overwrite"]), path=PATHS)
def test_train_with_a_bad_path(scratch, option, path):
    args = {
        "--data": ["--data", path, "--out", "new-run"],
        "--out": ["--data", "data", "--out", path],
        "--config": ["--data", "data", "--out", "new-run", "--config", path],
        "--resume": ["--out", path, "--resume"],
        "--overwrite": ["--data", "data", "--out", path, "--overwrite", "--set", "dim=4000000"],
    }[option]
    out = path if option in ("--out", "--resume", "--overwrite") else "new-run"
    invoke(scratch, ["train", *args, "--epochs", "1", *(["--set", "dim=8"] if option != "--overwrite" else [])], out)


@HARNESS
@given(
    command=st.sampled_from(["evaluate", "recommend", "inspect"]),
    option=st.sampled_from(["--run", "--out", "--users", "--drop", "--k", "--split", "--user", "--data"]),
    value=BAD | PATHS,
)
def test_run_commands_with_a_bad_argument(scratch, command, option, value):
    allowed = {
        "evaluate": {"--run", "--drop", "--split", "--data"},
        "recommend": {"--run", "--out", "--users", "--k", "--data"},
        "inspect": {"--run", "--out", "--user", "--split", "--data"},
    }[command]
    if option not in allowed:
        option = "--run"
    args = [command, "--run", value if option == "--run" else "run"]
    out = None
    if command == "recommend":
        out = value if option == "--out" else "top.tsv"
        args += ["--out", out]
    if command == "inspect" and option != "--user":
        args += ["--user", "1"] if option == "--run" else []
    if command == "inspect":
        out = value if option == "--out" else "pictures"
        args += ["--out", out]
    if option not in ("--run", "--out"):
        args += [option, value]
    invoke(scratch, args, out)
