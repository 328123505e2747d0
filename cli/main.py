"""The `mmsr-dgl` command line: preprocess, train, evaluate, recommend."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from mmsr_dgl.errors import UserError


class _Group(click.Group):
    """Turns UserError into a one-line message and exit status 2, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as err:
            click.echo(f"error: {err}", err=True)
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
        if modality in features:
            raise UserError(f"--features: modality '{modality}' given twice")
        features[modality] = Path(path)
    return features


@main.command()
@click.option("--sequences", type=click.Path(path_type=Path), help="One user per line: user item item ...")
@click.option("--interactions", type=click.Path(path_type=Path), help="RecBole .inter TSV or Amazon ratings CSV.")
@click.option("--items", type=click.Path(path_type=Path), help="items.tsv: item_id [asin] [has_<modality>] ...")
@click.option("--features", multiple=True, metavar="MODALITY=FILE", help="Item feature matrix (.npy); repeatable.")
@click.option("--synthetic", is_flag=True, help="Generate the embedded synthetic dataset instead.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output dataset directory.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML file of settings.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting; repeatable.")
def preprocess(sequences, interactions, items, features, synthetic, out, config_file, overrides) -> None:
    """Turn raw files (or the synthetic default) into a graph-ready dataset directory."""
    from mmsr_dgl.config import build_config
    from mmsr_dgl.data.preprocess import Inputs, PreprocessConfig, preprocess as run

    config = build_config(PreprocessConfig, config_file, overrides)
    inputs = Inputs(sequences=sequences, interactions=interactions, items=items,
                    features=_features(features), synthetic=synthetic)
    manifest = run(config, inputs, out, log=lambda m: click.echo(m, err=True))
    counts = manifest["counts"]
    click.echo(f"{out}: {counts['users']} users, {counts['items']} items, {counts['interactions']} interactions; "
               f"samples train {counts['train_samples']}, valid {counts['valid_samples']}, "
               f"test {counts['test_samples']}; modalities: {', '.join(manifest['modalities']) or 'none'}")


if __name__ == "__main__":
    main()
