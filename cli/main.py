"""The `mmsr-dgl` command line: encode, preprocess, train, evaluate, recommend, inspect."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from mmsr_dgl.errors import UserError

OUT_OF_MEMORY = ("can't allocate memory", "not enough memory")  # torch's CPU allocator, as a RuntimeError


class _Group(click.Group):
    """Turns UserError, and the file system's errors (a read-only place, a full disk), into a one-line message and
    exit status 2, without a traceback."""

    def invoke(self, ctx):
        # SIGTERM ends the command like Ctrl-C: what it was writing is removed, nothing half-written is left
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        try:
            return super().invoke(ctx)
        except UserError as err:
            click.echo(f"error: {err}", err=True)
        except OSError as err:
            click.echo(f"error: {err.filename or 'writing output'}: {err.strerror or err}", err=True)
        except KeyboardInterrupt:  # Ctrl-C: what was being written is removed; a run continues with --resume
            click.echo(
                "error: interrupted; nothing half-written was left (a `train` continues with --resume)", err=True
            )
            sys.stdout.flush()
            sys.stderr.flush()
            # the cleanup ran while the interrupt unwound; exiting now spares the interpreter's teardown of a
            # background collation thread still inside DGL, which can abort the process
            os._exit(130)
        except (MemoryError, RuntimeError) as err:
            if not isinstance(err, MemoryError) and not any(s in str(err) for s in OUT_OF_MEMORY):
                raise
            click.echo(
                "error: out of memory; lower 'dim', 'batch_size' or 'eval_batch_size' (--set), or use "
                "'n_negatives' for a large catalogue",
                err=True,
            )
        sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="mmsr-dgl")
def main() -> None:
    """MMSR multimodal sequential recommendation on DGL heterographs."""


def _features(values: tuple[str, ...]) -> dict[str, Path]:
    features = {}
    for value in values:
        modality, sep, path = value.partition("=")
        if not sep or not modality.isidentifier():
            raise UserError(f"--features {value!r}: expected MODALITY=FILE, e.g. image=image.npy")
        if modality == "item":
            raise UserError("--features: 'item' is the item node type; name the modality otherwise")
        if modality in features:
            raise UserError(f"--features: modality '{modality}' given twice")
        features[modality] = Path(path)
    return features


@main.command()
@click.option(
    "--items",
    "items_path",
    required=True,
    type=click.Path(path_type=Path),
    help="items.tsv: item_id [asin] [text column] ...",
)
@click.option("--text-column", default="text", show_default=True, help="The column of item text ('': none).")
@click.option(
    "--images",
    "images_dir",
    type=click.Path(path_type=Path),
    help="Folder of item images named <asin> or <item_id> (.jpg, .jpeg, .png, .gif, .webp, .bmp).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--chunk-size",
    default=1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Items per chunk kept on disk (what a resumed run does not redo).",
)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads (default: torch's).")
@click.option("--force", is_flag=True, help="Encode again even when the outputs are up to date.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
def encode(items_path, text_column, images_dir, out, batch_size, chunk_size, threads, force, progress) -> None:
    """Item text and images to feature matrices (row r = r-th item of --items) for `preprocess --features`;
    resumes after a kill. Needs the extra: pip install -e '.[encode]'."""
    import torch

    from mmsr_dgl.encode import encode as run

    if threads:
        torch.set_num_threads(threads)
    progress = sys.stderr.isatty() if progress is None else progress
    summary = run(
        items_path,
        out,
        images_dir,
        text_column or None,
        chunk_size,
        batch_size,
        force,
        log=lambda m: click.echo(m, err=True),
        progress=progress,
    )
    features = " ".join(f"--features {m}={out / f'{m}.npy'}" for m in ("image", "text") if m in summary)
    click.echo(f"next: mmsr-dgl preprocess --items {out / 'items.tsv'} {features} --sequences ... --out ...")


@main.command()
@click.option("--sequences", type=click.Path(path_type=Path), help="One user per line: user item item ...")
@click.option("--interactions", type=click.Path(path_type=Path), help="RecBole .inter TSV or Amazon ratings CSV.")
@click.option("--items", type=click.Path(path_type=Path), help="items.tsv: item_id [asin] [has_<modality>] ...")
@click.option("--features", multiple=True, metavar="MODALITY=FILE", help="Item feature matrix (.npy); repeatable.")
@click.option("--synthetic", is_flag=True, help="Generate the embedded synthetic dataset instead.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output dataset directory.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML file of settings.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting; repeatable.")
@click.option("--force", is_flag=True, help="Build the dataset again even when it is up to date.")
def preprocess(sequences, interactions, items, features, synthetic, out, config_file, overrides, force) -> None:
    """Turn raw files (or the synthetic default) into a graph-ready dataset directory."""
    from mmsr_dgl.config import build_config
    from mmsr_dgl.data.preprocess import Inputs, PreprocessConfig
    from mmsr_dgl.data.preprocess import preprocess as run

    config = build_config(PreprocessConfig, config_file, overrides)
    inputs = Inputs(
        sequences=sequences, interactions=interactions, items=items, features=_features(features), synthetic=synthetic
    )
    manifest = run(config, inputs, out, log=lambda m: click.echo(m, err=True), force=force)
    counts = manifest["counts"]
    click.echo(
        f"{out}: {counts['users']} users, {counts['items']} items, {counts['interactions']} interactions; "
        f"samples train {counts['train_samples']}, valid {counts['valid_samples']}, "
        f"test {counts['test_samples']}; modalities: {', '.join(manifest['modalities']) or 'none'}"
    )


@main.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help="Preprocessed dataset (with --resume: the run's own, unless given).",
)
@click.option("--out", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML file of settings.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting; repeatable.")
@click.option("--epochs", type=int, help="Shorthand for --set epochs=N.")
@click.option("--threads", type=int, help="Shorthand for --set threads=N.")
@click.option("--device", help="Shorthand for --set device=cpu|cuda.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run from its last checkpoint, with its own settings (--epochs, "
    "--threads and num_workers may change).",
)
@click.option("--overwrite", is_flag=True, help="Delete an existing run in --out and start afresh.")
@click.option(
    "--nproc",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Training processes on this machine (DistributedDataParallel; each takes a share of every batch "
    "and of the cores). Across machines, start `mmsr-dgl train` with torchrun instead.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
def train(
    data_dir, run_dir, config_file, overrides, epochs, threads, device, resume, overwrite, nproc, progress
) -> None:
    """Train a model, early-stopping on validation; test the best checkpoint once at the end."""
    import json

    from mmsr_dgl.training import train as run
    from mmsr_dgl.training.run import requested_settings

    shorthands = [
        f"{k}={v}" for k, v in (("epochs", epochs), ("threads", threads), ("device", device)) if v is not None
    ]
    config, trained_on = requested_settings(run_dir, config_file, [*overrides, *shorthands], resume)
    data_dir = data_dir or trained_on
    if data_dir is None:
        raise UserError("--data is required (except with --resume of an existing run)")
    if nproc > (os.cpu_count() or 1):
        raise UserError(f"--nproc {nproc}: this machine has {os.cpu_count()} cores; at most one process per core")
    progress = sys.stderr.isatty() if progress is None else progress
    results = run(
        config,
        data_dir,
        run_dir,
        resume=resume,
        overwrite=overwrite,
        echo=lambda m: click.echo(m, err=True),
        progress=progress,
        nproc=nproc,
    )
    if results:  # a process other than the first of a torchrun launch has nothing to print
        click.echo(json.dumps({"model": results["test"], "popularity": results["popularity_test"]}, indent=2))


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option(
    "--exclude-seen/--include-seen",
    default=None,
    help="Drop history items (never the target) from the ranking; default: the run's setting.",
)
@click.option(
    "--drop",
    "drops",
    multiple=True,
    metavar="MODALITY=RATE",
    help="At evaluation only, make this share of items lack the modality; repeatable.",
)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="The run's dataset, if it moved.")
def evaluate(run_dir, split, checkpoint, exclude_seen, drops, data_dir) -> None:
    """Full-ranking HR, NDCG and MRR at 5, 10, 20, printed as JSON."""
    import json

    from mmsr_dgl.training import evaluate as run
    from mmsr_dgl.training.run import load_run

    config, data, model = load_run(run_dir, checkpoint, data_dir)
    for drop in drops:
        modality, sep, rate = drop.partition("=")
        if sep and modality in data.modalities and modality not in model.modalities:
            raise UserError(
                f"--drop {drop!r}: the run does not read modality '{modality}' (it reads "
                f"{', '.join(model.modalities) or 'none'}), so dropping it would change nothing"
            )
        try:
            data.drop_codes(modality, float(rate), config.seed + 1)
        except ValueError:
            raise UserError(f"--drop {drop!r}: expected MODALITY=RATE, e.g. image=0.5") from None
    exclude = config.exclude_seen if exclude_seen is None else exclude_seen
    metrics = run(model, data, split, config.eval_batch_size, exclude, "cpu")
    click.echo(
        json.dumps(
            {
                "split": split,
                "checkpoint": checkpoint,
                "exclude_seen": exclude,
                "drop": list(drops),
                "samples": len(data.splits[split][0]),
                **metrics,
            },
            indent=2,
        )
    )


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output file (.tsv or .jsonl).")
@click.option("--users", "users_file", type=click.Path(path_type=Path), help="Raw user ids, one per line.")
@click.option("--format", "fmt", type=click.Choice(["tsv", "jsonl"]), help="Default: from the file extension.")
@click.option(
    "--exclude-seen/--include-seen",
    default=None,
    help="Never recommend items already in the user's history; default: the run's setting.",
)
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="The run's dataset, if it moved.")
def recommend(run_dir, k, out, users_file, fmt, exclude_seen, checkpoint, data_dir) -> None:
    """Top-K items for every user (or those in --users) from their full history."""
    import numpy as np

    from mmsr_dgl.io import check_output_file
    from mmsr_dgl.training.recommend import read_user_list, write_recommendations
    from mmsr_dgl.training.recommend import recommend as run
    from mmsr_dgl.training.run import load_run

    check_output_file(out, "--out")
    config, data, model = load_run(run_dir, checkpoint, data_dir)
    inputs = [Path(f["path"]) for f in data.manifest["inputs"]["files"].values()]
    check_output_file(out, "--out", (*inputs, *([users_file] if users_file else [])))
    users = (
        read_user_list(users_file, data, log=lambda m: click.echo(m, err=True))
        if users_file
        else np.arange(len(data.user_ids))
    )
    fmt = fmt or ("jsonl" if out.suffix == ".jsonl" else "tsv")
    exclude = config.exclude_seen if exclude_seen is None else exclude_seen
    items, scores = run(model, data, users, k, exclude, config.eval_batch_size)
    write_recommendations(out, data, users, items, scores, fmt)
    click.echo(f"{out}: top-{items.shape[1]} for {len(users)} users ({fmt})", err=True)


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--out", type=click.Path(path_type=Path), help="Where the pictures go (default: RUN/inspect).")
@click.option(
    "--user", help="Also this user's (raw id) sample of the split: their graph, the top-10 and the target's rank."
)
@click.option(
    "--items",
    "items_file",
    type=click.Path(path_type=Path),
    help="Items file with a text column, for the top-10's text (default: the one preprocessing read).",
)
@click.option("--text-column", default="text", show_default=True, help="The items file's column of item text.")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="The run's dataset, if it moved.")
def inspect(run_dir, out, user, items_file, text_column, split, data_dir) -> None:
    """PNGs of a run: training curves, the update gate, accuracy by history length and target popularity, and
    with --user one user's MSGraph, top-10 and target rank; plus inspect.json and summary.txt."""
    from mmsr_dgl.inspect import inspect as run
    from mmsr_dgl.inspect import summary_text

    summary = run(run_dir, out, user, items_file, text_column, split, data_dir, log=lambda m: click.echo(m, err=True))
    click.echo(summary_text(summary), nl=False)


if __name__ == "__main__":
    main()
