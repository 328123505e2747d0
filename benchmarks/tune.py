"""Validation-only tuning on Amazon Toys (issue 5): short trials with a fixed epoch budget, test never touched.

    python benchmarks/tune.py --trials item_codes,chosen_features --epochs 6
    python benchmarks/tune.py --list

A trial is training overrides plus, optionally, preprocessing overrides (codes per modality, links per item).
It trains into runs/tune/<trial> for `--epochs` epochs and writes its validation scores per epoch to
benchmarks/results/tuning/<trial>.json; finished trials are skipped, interrupted ones resume.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from suite import EXPERIMENTS
from toys import ROOT, prepare_toys, toys_dir

from mmsr_dgl.config import build_config
from mmsr_dgl.training import TrainConfig, train
from mmsr_dgl.training.run import CONFIG_FILE

# every trial starts from the paper's choices, whatever the current defaults are
PAPER = ["readout=last", "item_repr=id", "temperature=0"]
SASREC = EXPERIMENTS["sasrec"]  # RecBole's settings
SASREC_D02 = EXPERIMENTS["sasrec_dropout_0.2"]  # the best SASRec on validation so far
CHOSEN = ["item_repr=id+codes", "readout=last+pool", "temperature=0.1"]


def changed(base: list[str], *changes: str) -> list[str]:
    """`base` overrides with some of them changed (or added)."""
    keys = {c.split("=")[0] for c in changes}
    return [o for o in base if o.split("=")[0] not in keys] + list(changes)


# name -> (training overrides, preprocessing overrides)
TRIALS = {
    "item_codes": (["item_repr=id+codes"], []),
    "item_codes_dropout_0.4": (["item_repr=id+codes", "dropout=0.4"], []),
    "item_codes_256": (["item_repr=id+codes"], ["n_codes=256"]),
    "item_codes_256_cos_0.1": (["item_repr=id+codes", "temperature=0.1"], ["n_codes=256"]),
    "item_codes_256_pool_cos_0.1": (CHOSEN, ["n_codes=256"]),
    # around the chosen settings (item codes, 256 codes, pool readout, cosine / 0.1)
    "chosen_tau_0.2": (changed(CHOSEN, "temperature=0.2"), ["n_codes=256"]),
    "chosen_tau_0.05": (changed(CHOSEN, "temperature=0.05"), ["n_codes=256"]),
    "chosen_dropout_0.4": (changed(CHOSEN, "dropout=0.4"), ["n_codes=256"]),
    "chosen_dim_128": (changed(CHOSEN, "dim=128"), ["n_codes=256"]),
    "chosen_codes_1024": (CHOSEN, ["n_codes=1024"]),
    "chosen_features": (changed(CHOSEN, "item_repr=id+codes+features"), ["n_codes=256"]),
    # around the chosen settings with features, aimed at HR@10 (where MMSR trails SASRec on rare targets)
    "features_layers_2": (changed(CHOSEN, "item_repr=id+codes+features", "n_layers=2"), ["n_codes=256"]),
    "features_last": (changed(CHOSEN, "item_repr=id+codes+features", "readout=last"), ["n_codes=256"]),
    "features_residual": (changed(CHOSEN, "item_repr=id+codes+features", "readout=last+pool_residual"),
                          ["n_codes=256"]),
    "features_dim_128": (changed(CHOSEN, "item_repr=id+codes+features", "dim=128"), ["n_codes=256"]),
    "features_mixture": (changed(CHOSEN, "item_repr=id+codes+features", "readout=mixture"), ["n_codes=256"]),
    "features_mixture_gated": (changed(CHOSEN, "item_repr=id+codes+features", "readout=mixture_gated"),
                               ["n_codes=256"]),
    "features_ensemble": (changed(CHOSEN, "item_repr=id+codes+features", "readout=ensemble"), ["n_codes=256"]),
    # the mixture's NDCG@10 levels off early at any width: is it capped by the temperature's sharpness? (no)
    "features_mixture_tau_0.05": (changed(CHOSEN, "item_repr=id+codes+features", "readout=mixture",
                                          "temperature=0.05"), ["n_codes=256"]),
    # the mixture's two queries each rank worse alone than the pool readout does: keep the pool query whole
    "features_mixture_anchored": (changed(CHOSEN, "item_repr=id+codes+features", "readout=mixture_anchored"),
                                  ["n_codes=256"]),
    # between the mixture (HR@10) and the pool readout alone (NDCG@10): most of the weight on the pool query
    "features_mixture_pool_0.8": (changed(CHOSEN, "item_repr=id+codes+features", "readout=mixture",
                                          "pool_weight=0.8"), ["n_codes=256"]),
    # the mixture (HR@10) with finer codes, which raised both metrics of the chosen settings (chosen_codes_1024)
    "features_mixture_codes_1024": (changed(CHOSEN, "item_repr=id+codes+features", "readout=mixture"),
                                    ["n_codes=1024"]),
    "features_mixture_codes_4096": (changed(CHOSEN, "item_repr=id+codes+features", "readout=mixture"),
                                    ["n_codes=4096"]),
    # the same with the learning rate decayed to 0 over the trial (a cosine): its score crept up for 20 epochs
    # at a constant rate, over the 30-minute budget; run with --epochs 12, the schedule's length
    "features_mixture_codes_4096_cosine": (changed(CHOSEN, "item_repr=id+codes+features", "readout=mixture",
                                                   "lr_schedule=cosine"), ["n_codes=4096"]),
    # fewer links per item: code-to-code edges (between consecutive items and across modalities) grow with the
    # square of the links and are 70 % of a batch's edges at 3 links; 1 link cuts them to a ninth
    "features_mixture_codes_4096_links_1": (changed(CHOSEN, "item_repr=id+codes+features", "readout=mixture"),
                                            ["n_codes=4096", "codes_per_item=1"]),
    # the settings the issue lists that no trial had changed yet: learning rate, weight decay, batch size, links
    "chosen_lr_2e-3": (changed(CHOSEN, "lr=2e-3"), ["n_codes=256"]),
    "chosen_wd_1e-5": (changed(CHOSEN, "weight_decay=1e-5"), ["n_codes=256"]),
    "chosen_batch_512": (changed(CHOSEN, "batch_size=512"), ["n_codes=256"]),
    "chosen_links_5": (CHOSEN, ["n_codes=256", "codes_per_item=5"]),
    "sasrec": (SASREC, []),
    "sasrec_cos_0.1": (changed(SASREC, "temperature=0.1"), []),
    "sasrec_dropout_0.2": (SASREC_D02, []),
    "sasrec_lr_2e-3": (changed(SASREC, "lr=2e-3"), []),
    # around the tuned SASRec (dropout 0.2), as MMSR's trials go around its chosen settings
    "sasrec_d0.2_layers_1": (changed(SASREC_D02, "n_layers=1"), []),
    "sasrec_d0.2_layers_3": (changed(SASREC_D02, "n_layers=3"), []),
    "sasrec_d0.2_dim_128": (changed(SASREC_D02, "dim=128"), []),
    "sasrec_d0.2_wd_1e-5": (changed(SASREC_D02, "weight_decay=1e-5"), []),
    "sasrec_d0.2_batch_512": (changed(SASREC_D02, "batch_size=512"), []),
    "sasrec_dropout_0.3": (changed(SASREC, "dropout=0.3", "attn_dropout=0.3"), []),
    "sasrec_dropout_0.1": (changed(SASREC, "dropout=0.1", "attn_dropout=0.1"), []),
    "sasrec_d0.2_lr_2e-3": (changed(SASREC_D02, "lr=2e-3"), []),
    "sasrec_d0.2_cos_0.1": (changed(SASREC_D02, "temperature=0.1"), []),
}


def trial_settings(name: str) -> tuple[list[str], list[str]]:
    """All training overrides (MMSR trials start from the paper's choices) and preprocessing overrides of a trial."""
    train_overrides, data_overrides = TRIALS[name]
    base = [] if "model=sasrec" in train_overrides else PAPER
    return base + train_overrides, ["split=loo", "n_codes=64", "codes_per_item=3", *data_overrides]


def run_trial(name: str, epochs: int, toys) -> dict:
    out = ROOT / "benchmarks" / "results" / "tuning" / f"{name}.json"
    if out.exists():
        return json.loads(out.read_text())
    train_overrides, data_overrides = TRIALS[name]
    all_train, all_data = trial_settings(name)
    tag = "-".join(data_overrides) or "default"
    data_dir = prepare_toys(toys, ROOT / "runs" / "tune" / f"data-{tag}", all_data)
    run_dir = ROOT / "runs" / "tune" / name
    config = build_config(TrainConfig, overrides=all_train + [f"epochs={epochs}", "seed=1"])
    best = train(config, data_dir, run_dir, resume=(run_dir / CONFIG_FILE).exists(), echo=print, progress=False,
                 test=False)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = {"trial": name, "train_overrides": train_overrides, "preprocess_overrides": data_overrides,
               "seed": config.seed, "epochs": epochs, "best_epoch": best["epoch"], "best_valid": best["valid"],
               "valid_ndcg10_per_epoch": [r["valid"]["ndcg@10"] for r in history],
               "valid_hr10_per_epoch": [r["valid"]["hr@10"] for r in history],
               "seconds_per_epoch": [r["seconds"] for r in history]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toys", type=Path, default=toys_dir())
    parser.add_argument("--trials", default="", help="comma-separated; --list shows them")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        for name, (train_overrides, data_overrides) in TRIALS.items():
            print(f"{name:26s} {' '.join(train_overrides + data_overrides)}")
        return
    if not args.trials:
        parser.error("--trials is required (--list shows them)")
    for name in args.trials.split(","):
        if name not in TRIALS:
            raise SystemExit(f"unknown trial {name!r}; --list shows them")
        s = run_trial(name, args.epochs, args.toys)
        print(f"{name}: best valid ndcg@10 {s['best_valid']['ndcg@10']:.4f} hr@10 {s['best_valid']['hr@10']:.4f} "
              f"at epoch {s['best_epoch']} of {s['epochs']}; per epoch "
              + " ".join(f"{x:.4f}" for x in s["valid_ndcg10_per_epoch"]), flush=True)


if __name__ == "__main__":
    main()
