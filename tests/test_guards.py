"""What a writing command may touch: its own output folder (claimed and locked) or output file, never a run,
dataset or input it did not make, never a folder another command is writing."""

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import snapshot

from cli.main import main
from mmsr_dgl.data.preprocess import Inputs, PreprocessConfig, preprocess
from mmsr_dgl.data.synthetic import SyntheticSpec
from mmsr_dgl.errors import UserError
from mmsr_dgl.io import claim_dir, folder_kind
from mmsr_dgl.training import TrainConfig, train

TINY = dict(synthetic=SyntheticSpec(users=200, items=80, groups=4), n_codes=8, pca_dim=8)


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, fragment: str) -> None:
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output, result.output


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A dataset made from a sequences file, a run trained on it (with an inspect folder) and a top-10 file."""
    root = tmp_path_factory.mktemp("guards")
    preprocess(PreprocessConfig(**TINY), Inputs(synthetic=True), root / "synthetic", log=lambda m: None)
    lines = []
    with np.load(root / "synthetic" / "data.npz") as arrays:
        offsets, items = arrays["seq_offsets"], arrays["seq_items"]
        for u in range(len(offsets) - 1):
            lines.append(" ".join(map(str, [u + 1, *items[offsets[u] : offsets[u + 1]]])))
    (root / "sequences.txt").write_text("\n".join(lines) + "\n")
    preprocess(
        PreprocessConfig(n_codes=8, pca_dim=8),
        Inputs(sequences=root / "sequences.txt"),
        root / "data",
        log=lambda m: None,
    )
    train(
        TrainConfig(dim=16, epochs=1, batch_size=256), root / "data", root / "run", echo=lambda m: None, progress=False
    )
    (root / "run" / "inspect").mkdir()
    (root / "run" / "inspect" / "inspect.json").write_text('{"kind": "mmsr-dgl inspect", "pictures": []}')
    return root


@pytest.mark.parametrize(
    "target",
    [
        "run/best.pt",
        "run/config.yaml",
        "data/data.npz",
        "data/manifest.json",
        "sequences.txt",
        "run/inspect/top.tsv",
        "fifo",
        "link.tsv",
        "run",
    ],
)
def test_recommend_never_writes_over_a_run_a_dataset_an_input_or_a_special_file(workspace, target):
    if target == "fifo" and not (workspace / "fifo").exists():
        os.mkfifo(workspace / "fifo")
    if target == "link.tsv" and not (workspace / "link.tsv").is_symlink():
        (workspace / "elsewhere.tsv").write_text("mine\n")
        (workspace / "link.tsv").symlink_to(workspace / "elsewhere.tsv")
    before = snapshot(workspace)
    result = cli("recommend", "--run", workspace / "run", "--out", workspace / target)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert snapshot(workspace) == before


def test_recommend_may_write_a_new_file_into_the_run_folder(workspace):
    out = workspace / "run" / "top10.tsv"
    assert cli("recommend", "--run", workspace / "run", "--out", out).exit_code == 0
    out.unlink()


def test_resume_of_a_run_whose_last_checkpoint_is_gone_keeps_its_results(workspace, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(workspace / "run", run)
    (run / "last.pt").unlink()
    before = snapshot(run)
    refused(cli("train", "--data", workspace / "data", "--out", run, "--resume"), "last.pt is missing")
    assert snapshot(run) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run_and_an_empty_out(workspace, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("dim: 64\n")
    (mine / "train.log").write_text("my notes\n")
    before = snapshot(tmp_path)
    refused(cli("train", "--data", workspace / "data", "--out", mine, "--overwrite"), "train did not write")
    refused(cli("train", "--data", workspace / "data", "--out", "", "--set", "epochs=1"), "give a folder")
    refused(cli("train", "--data", workspace / "data", "--out", workspace / "data" / "run"), "inside the dataset")
    assert snapshot(tmp_path) == before


def test_a_second_writer_of_a_folder_is_refused_while_the_first_runs(workspace, tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    with claim_dir(run, "run"):  # as a `train` in progress holds it
        refused(
            cli("train", "--data", workspace / "data", "--out", run, "--set", "epochs=1"),
            "another mmsr-dgl command is writing there",
        )
        assert not any(run.iterdir())
    with claim_dir(data, "dataset"):
        refused(cli("preprocess", "--synthetic", "--out", data), "another mmsr-dgl command is writing there")
    assert not data.exists()  # claimed, left empty, removed
    with pytest.raises(UserError, match="another mmsr-dgl command"), claim_dir(run, "run"), claim_dir(run, "run"):
        pass


def test_a_writer_that_waits_starts_once_the_first_has_ended(tmp_path):
    data, started = tmp_path / "data", threading.Event()
    first = threading.Thread(target=lambda: _hold(data, started, seconds=1.0))
    first.start()
    started.wait()
    begun = time.monotonic()
    with claim_dir(data, "dataset", wait=True):  # as the benchmark runner's `preprocess` of a shared dataset
        waited = time.monotonic() - begun
    first.join()
    assert waited > 0.5, "the second writer did not wait for the first"


def _hold(folder: Path, started: threading.Event, seconds: float) -> None:
    with claim_dir(folder, "dataset"):
        (folder / "manifest.json").write_text(json.dumps({"kind": "mmsr-dgl dataset"}))
        started.set()
        time.sleep(seconds)


def test_overwrite_removes_the_old_runs_inspect_output_and_keeps_the_users_files(workspace, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(workspace / "run", run)
    (run / "top10.tsv").write_text("mine\n")
    assert folder_kind(run / "inspect") == "inspect"
    result = cli(
        "train", "--data", workspace / "data", "--out", run, "--overwrite", "--set", "epochs=1", "--set", "dim=8"
    )
    assert result.exit_code == 0, result.output
    assert not (run / "inspect").exists() and (run / "top10.tsv").read_text() == "mine\n"


# ---- settings that would be silently wrong or exhaust the machine -------------------------------------------------


def test_a_hand_edited_run_config_is_refused_not_silently_applied(workspace, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(workspace / "run", run)
    text = (run / "config.yaml").read_text()
    assert "  temperature: 0.1\n" in text
    (run / "config.yaml").write_text(text.replace("  temperature: 0.1\n", "  temperature: 0.5\n"))
    refused(cli("evaluate", "--run", run), "settings temperature differ from those best.pt was trained with")


def test_dropping_a_modality_the_run_does_not_read_is_refused(workspace, tmp_path):
    run = tmp_path / "image-only"
    train(
        TrainConfig(dim=8, epochs=1, batch_size=256, modalities=["image"]),
        workspace / "synthetic",
        run,
        echo=lambda m: None,
        progress=False,
    )
    refused(cli("evaluate", "--run", run, "--drop", "text=0.5"), "does not read modality 'text'")
    assert cli("evaluate", "--run", run, "--drop", "image=0.5").exit_code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nproc", "999"], "at most one process per core"),
        (["--set", "n_negatives=100000"], "setting 'n_negatives' (100000)"),
    ],
)
def test_resource_settings_are_bounded_by_the_machine_and_the_data(workspace, tmp_path, args, message):
    refused(cli("train", "--data", workspace / "data", "--out", tmp_path / "run", *args), message)
    assert not (tmp_path / "run").exists()


def test_a_settings_file_with_aliases_is_refused(workspace, tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nmodalities: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    )
    result = cli("train", "--data", workspace / "data", "--out", tmp_path / "run", "--config", bomb)
    refused(result, "aliases (*name) are not accepted")
    assert len(result.output) < 1000


@pytest.mark.parametrize(
    "sets, message",
    [
        (["max_len=1000000000000"], "setting 'max_len'"),
        (["n_codes=4", "codes_per_item=5"], "cannot link to more codes than there are"),
        (["test_ratio=0.3"], "applies to split=ratio only"),
    ],
)
def test_preprocess_refuses_settings_it_would_ignore_or_cannot_hold(tmp_path, sets, message):
    args = [a for s in sets for a in ("--set", s)]
    refused(cli("preprocess", "--synthetic", "--out", tmp_path / "data", *args), message)
    assert not (tmp_path / "data").exists()


def test_an_integer_id_of_thousands_of_digits_is_one_id(tmp_path):
    long_id = "0" + "7" * 5000
    (tmp_path / "seq.txt").write_text("".join(f"{u} {long_id} 2 3 4 5\n" for u in range(1, 30)))
    result = cli("preprocess", "--sequences", tmp_path / "seq.txt", "--out", tmp_path / "data", "--set", "k_core=0")
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


def test_the_k_core_filter_reports_what_it_removed(tmp_path):
    lines = [f"{u} 1 2 3 4 5 6" for u in range(1, 8)] + ["8 1 99", "9 98 97 96 95 94"]
    (tmp_path / "seq.txt").write_text("\n".join(lines) + "\n")
    result = cli("preprocess", "--sequences", tmp_path / "seq.txt", "--out", tmp_path / "data", "--set", "k_core=3")
    assert result.exit_code == 0, result.output
    assert "kept 7 of 9 users, 6 of 12 items, 42 of 49 interactions" in result.output
    counts = json.loads((tmp_path / "data" / "manifest.json").read_text())["counts"]
    assert counts["read"] == {"users": 9, "items": 12, "interactions": 49} and counts["users"] == 7


def test_ids_with_a_tab_are_refused_and_blank_asins_fall_back_to_the_id(tmp_path):
    (tmp_path / "ratings.csv").write_text('"u\t1",i1,5,100\nu2,i1,5,100\n')
    refused(
        cli("preprocess", "--interactions", tmp_path / "ratings.csv", "--out", tmp_path / "d1"),
        "ratings.csv, line 1: a user or item id holds a tab",
    )
    lines = [f"{u} {' '.join(str(i) for i in range(1, 7))}" for u in range(1, 9)]
    (tmp_path / "seq.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "items.tsv").write_text(
        "item_id\tasin\n" + "".join(f"{i}\t{'B0' + str(i) if i % 2 else ''}\n" for i in range(1, 7))
    )
    assert (
        cli(
            "preprocess",
            "--sequences",
            tmp_path / "seq.txt",
            "--items",
            tmp_path / "items.tsv",
            "--out",
            tmp_path / "d2",
            "--set",
            "k_core=0",
        ).exit_code
        == 0
    )
    from mmsr_dgl.data import load_processed

    assert load_processed(tmp_path / "d2").item_names[1:].tolist() == ["B01", "2", "B03", "4", "B05", "6"]


def test_resume_with_a_config_file_keeps_the_runs_own_settings_and_a_missing_run_is_named(workspace, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(workspace / "run", run)
    (tmp_path / "more.yaml").write_text("epochs: 2\n")
    result = cli("train", "--out", run, "--resume", "--config", tmp_path / "more.yaml")
    assert result.exit_code == 0, result.output  # dim 16 of the run kept: the checkpoint loads
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    refused(cli("train", "--out", tmp_path / "nowhere", "--resume"), "nothing to resume (no run there)")


def test_a_checkpoint_write_that_torch_reports_as_a_runtime_error_and_running_out_of_memory_are_named(
    workspace, tmp_path, monkeypatch
):
    import torch

    from mmsr_dgl.training import trainer

    real, calls = torch.save, []

    def save(obj, path, *args, **kwargs):  # what torch raises when the disk fills during its zip writer
        calls.append(path)
        if len(calls) > 1:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1536 vs 1480")
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    refused(
        cli("train", "--data", workspace / "data", "--out", tmp_path / "run", "--set", "dim=8", "--epochs", "2"),
        "the checkpoint could not be written",
    )
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp-" in p.name]
    monkeypatch.undo()

    def exhausted(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you "
            "tried to allocate 274877906944 bytes."
        )

    monkeypatch.setattr(trainer, "build_model", exhausted)
    refused(cli("train", "--data", workspace / "data", "--out", tmp_path / "run2"), "out of memory")


def test_a_config_edited_out_of_range_and_a_foreign_checkpoint_are_named_briefly(workspace, tmp_path):
    from mmsr_dgl.training.run import build_model, load_run, restore_model

    run = tmp_path / "run"
    shutil.copytree(workspace / "run", run)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("  dim: 16\n", "  dim: -5\n"))
    refused(cli("evaluate", "--run", run), "edited by hand")
    config, data, model = load_run(workspace / "run")
    sasrec = build_model(TrainConfig(model="sasrec", dim=16), data)
    with pytest.raises(UserError) as err:
        restore_model(model, {"model": sasrec.state_dict()}, Path("sasrec.pt"))
    message = str(err.value)
    assert "missing weights" in message and "unexpected weights" in message and len(message) < 600


def test_unclear_inputs_get_messages_that_say_what_is_wrong(workspace, tmp_path):
    (tmp_path / "folder").mkdir()
    refused(cli("preprocess", "--sequences", tmp_path / "folder", "--out", tmp_path / "d"), "not a regular file")
    (tmp_path / "x.inter").write_text("user\titem\ttime\n1\t2\t3\n")
    refused(
        cli("preprocess", "--interactions", tmp_path / "x.inter", "--out", tmp_path / "d"),
        "not a RecBole .inter header",
    )
    (tmp_path / "users.txt").write_text("007\n7\n8\n")
    result = cli(
        "recommend", "--run", workspace / "run", "--users", tmp_path / "users.txt", "--out", tmp_path / "top.tsv"
    )
    assert result.exit_code == 0, result.output
    assert "1 repeated user ids" in result.output
    assert {line.split("\t")[0] for line in (tmp_path / "top.tsv").read_text().splitlines()[1:]} == {"7", "8"}


def test_inputs_and_settings_that_say_one_thing_twice_are_refused(workspace, tmp_path):
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\titem_id:token\n1\t2\t3\n")
    refused(
        cli("preprocess", "--interactions", tmp_path / "x.inter", "--out", tmp_path / "d"),
        "the header names 'item_id' more than once",
    )
    (tmp_path / "seq.txt").write_text("".join(f"{u} 1 2 3 4\n" for u in range(1, 9)))
    (tmp_path / "items.tsv").write_text("item_id\tasin\n1\tB1\n2\tB2\n3\tB1\n4\tB4\n")
    refused(
        cli(
            "preprocess",
            "--sequences",
            tmp_path / "seq.txt",
            "--items",
            tmp_path / "items.tsv",
            "--out",
            tmp_path / "d",
            "--set",
            "k_core=0",
        ),
        "items.tsv, line 4: asin 'B1' is also the asin of line 2",
    )
    refused(
        cli(
            "train", "--data", workspace / "synthetic", "--out", tmp_path / "run", "--set", "modalities=[image, image]"
        ),
        "names a modality more than once",
    )


def test_ctrl_c_during_training_ends_with_a_message_and_the_run_resumes(workspace, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "cli.main",
        "train",
        "--data",
        str(workspace / "synthetic"),
        "--out",
        str(run),
        "--no-progress",
        "--set",
        "dim=8",
        "--epochs",
        "50",
        "--set",
        "patience=50",
    ]
    proc = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "last.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]
    result = cli("train", "--out", run, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output


def test_a_symbolic_link_loop_as_out_is_named(workspace, tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    before = snapshot(tmp_path)
    refused(cli("preprocess", "--synthetic", "--out", tmp_path / "loop"), "a symbolic link that leads nowhere")
    refused(cli("train", "--data", workspace / "data", "--out", tmp_path / "loop" / "run"), "cannot be made a folder")
    assert snapshot(tmp_path) == before
