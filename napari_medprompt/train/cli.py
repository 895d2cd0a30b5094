"""``medprompt-train`` and ``medprompt-eval``: the training loop and evaluation from the command line.

    medprompt-train --data pneumoniamnist.npz --method linear-probe --backbone ViT-B-16 --shots 16 --seeds 0 1 2 --out runs/lp
    medprompt-train --config training/configs/medmnist_fraction_linear_probe.yaml --data pneumoniamnist.npz
    medprompt-train --list-methods
    medprompt-eval --checkpoint runs/lp/seed_0/adapter.safetensors --data pneumoniamnist.npz --split test
    medprompt-eval --store models/ --data pneumoniamnist.npz --split test          # the active version

**Protocol.** ``--data`` is the training *pool*: a folder with one sub-folder of images per class, or a
MedMNIST-style ``.npz`` whose official splits are used: ``train`` (the pool the shots / fractions are
sampled from), ``val`` (model selection) and ``test`` (evaluation, reported per seed and as mean ± sd).
Other validation data: ``--val-data`` (a folder or .npz), or ``--val-fraction f``: a grouped split of the
pool made once (seed ``--split-seed``) *before* the shots are sampled, so k-shot trains on exactly k per
class. Without validation data every run trains the fixed schedule (no early stopping) and says so.
``--seeds 0 1 2`` repeats sampling and training per seed and reports mean ± sd.

A ``--config`` file (YAML or JSON) gives defaults for any option (its keys are the option names with
underscores, plus ``method_options``); an unknown key is an error. Options on the command line win.
``--fraction`` may list several values (the papers' 5/10/20/50/100 % protocol): one series per fraction.
Method options: ``--opt NAME=VALUE`` (repeatable) or the method's own flags (``--ratio 0.5`` for
clip-adapter; ``--method M --help`` lists them), checked against the method's option schema
(``--list-methods`` shows every method's). ``--store DIR`` writes every run as a new version of a model store.

The parser, config files and option resolution live in :mod:`.cli_options`; ``--list-methods``,
``--list-versions`` and ``--rebuild-index`` in :mod:`.cli_actions`; this module runs the training and
evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from napari_medprompt.train.cli_actions import describe_methods, store_command
from napari_medprompt.train.cli_options import (  # noqa: F401  (CONFIG_KEYS, TRAIN_KEYS: importable here too)
    CONFIG_KEYS,
    TRAIN_KEYS,
    add_method_flags,
    load_config,
    method_options,
    parser_train,
    run_settings,
    train_config_values,
)

__all__ = ["CONFIG_KEYS", "TRAIN_KEYS", "describe_methods", "eval_main", "train_main"]


def _load_data(path: str, split: str, classes=None):
    from napari_medprompt.train.data import from_folder, from_npz

    p = Path(path)
    if p.suffix == ".npz":
        return from_npz(p, split, classes)
    return from_folder(p)


def train_main(argv: list[str] | None = None) -> int:
    from napari_medprompt.classify.base import validate_method_options
    from napari_medprompt.train.checkpoints import CheckpointError
    from napari_medprompt.train.data import MAX_UNREADABLE, DataError, npz_splits, split_train_val
    from napari_medprompt.train.loop import TrainConfig
    from napari_medprompt.train.metrics import format_mean_sd
    from napari_medprompt.train.store import StoreError

    parser = parser_train()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])  # --help after the method flags
    if args.list_methods:
        print(describe_methods())
        return 0
    if args.list_versions or args.rebuild_index:
        return store_command(args)
    cfg = load_config(args.config)
    method = args.method or cfg.get("method") or TrainConfig.method
    flags = add_method_flags(parser, method)  # e.g. --ratio 0.5 for clip-adapter
    args = parser.parse_args(argv)
    merged = train_config_values(args, cfg)
    options = method_options(args, cfg, flags)
    from napari_medprompt.train.task import is_seg_method

    if is_seg_method(method):  # text-prompted segmentation: slices + masks + prompts, same loop
        from napari_medprompt.seg_adapters.cli import seg_train_main
        from napari_medprompt.train import distributed as dd

        try:  # under torchrun: DDP in the loop, rank 0 writes and reports
            dist = dd.init_from_env(merged.get("device") or "auto")
        except RuntimeError as err:
            print(f"medprompt-train: {err}", file=sys.stderr)
            return 2
        saved_stdout = sys.stdout
        if not dist.is_main:
            sys.stdout = open(os.devnull, "w")
        try:
            return seg_train_main(args, cfg, merged, options)
        finally:
            sys.stdout = saved_stdout
            dd.shutdown()
    run = run_settings(args, cfg, method, options, validate_method_options)
    if run is None:
        return 2
    data_path, out, store, seeds, val_fraction = run.data, run.out, run.store, run.seeds, run.val_fraction
    shots = args.shots if args.shots is not None else cfg.get("shots")
    fracs = args.fraction or cfg.get("fractions") or ([cfg["fraction"]] if cfg.get("fraction") else [None])
    classes = args.classes or cfg.get("classes")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from napari_medprompt.train import distributed as dd

    try:
        dist = dd.init_from_env(merged.get("device") or "auto")
    except RuntimeError as err:
        print(f"medprompt-train: {err}", file=sys.stderr)
        return 2
    quiet = args.quiet or not dist.is_main
    err_out = sys.stderr if dist.is_main else open(os.devnull, "w")  # logs on rank 0
    problem = _unwritable(out) or (_unwritable(Path(store)) if store else None)
    if problem:
        print(f"medprompt-train: {problem}", file=sys.stderr)
        return 2
    try:
        is_npz = Path(data_path).suffix == ".npz"
        pool = _load_data(data_path, args.split or cfg.get("split", "train"), classes)
        splits = npz_splits(data_path) if is_npz else []
        val_split = args.val_split or cfg.get("val_split") or ("val" if "val" in splits else None)
        test_split = args.test_split or cfg.get("test_split") or ("test" if "test" in splits else None)
        val, val_note = None, "none: fixed schedule (no early stopping, last epoch kept)"
        if run.val_data:
            val = _load_data(run.val_data, val_split or "val", pool.classes)
            val_note = f"{run.val_data} ({len(val)} images)"
        elif val_fraction:
            pool, val = split_train_val(pool, float(val_fraction), int(args.split_seed or cfg.get("split_seed") or 0))
            val_note = f"{float(val_fraction):g} of the pool, grouped, fixed ({len(val)} images)"
        elif val_split and val_split != "none" and is_npz:
            val = _load_data(data_path, val_split, pool.classes)
            val_note = f"official {val_split!r} split ({len(val)} images)"
        test = None
        if test_split and test_split != "none" and is_npz:
            test = _load_data(data_path, test_split, pool.classes)
        skipped = getattr(pool, "unreadable", None)
        if skipped:
            print(f"skipped {len(skipped)} unreadable image(s) (at most {MAX_UNREADABLE:.0%} allowed): "
                  + "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""), file=err_out)
        print(f"training pool: {len(pool)} images {dict(zip(pool.classes, pool.class_counts().tolist()))}; "
              f"validation: {val_note}; test: {'none' if test is None else f'{test_split!r} ({len(test)} images)'}"
              + (f"; {dist.describe()}" if dist.enabled else ""), file=err_out)
        summaries = []
        for frac in fracs:
            run_dir = out / f"fraction_{frac:g}" if frac and len(fracs) > 1 else out
            config = TrainConfig(**merged, method_options=run.options, resume=bool(args.resume))
            label = f"fraction {frac:g}" if frac else (f"{shots}-shot" if shots else "")
            summary = _run_seeds(config, pool, seeds, val=val, test=test, shots=shots, fraction=frac, store=store,
                                 out_dir=run_dir, quiet=quiet, label=label, err_out=err_out)
            summary["validation"] = val_note
            if dist.enabled:
                summary["processes"] = dist.world_size
            if dist.is_main:
                run_dir.mkdir(parents=True, exist_ok=True)
                from napari_medprompt.io.atomic import atomic_write_text

                atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1))
            summaries.append((label, summary))
        if dist.is_main:
            from napari_medprompt.train.results import write_results

            rows = []
            for label, s in summaries:
                split = "test" if s["test"]["n"] else ("val" if s["val"]["n"] else "train")
                rows.append({"label": f"{config.method} {label}".strip() + f" ({split})",
                             "runs": [r[split] for r in s["runs"]],
                             "note": ("RANDOM backbone weights: not meaningful" if s["runs"][0].get("random_weights")
                                      else "")})
            write_results(out, rows)
        dd.barrier()
    except (DataError, CheckpointError, StoreError, ValueError, RuntimeError) as err:
        print(f"medprompt-train{f' [rank {dist.rank}]' if dist.enabled else ''}: {dd.lost_peer_message(err) or err}",
              file=sys.stderr)
        return 2
    finally:
        dd.shutdown()
    if not dist.is_main:
        return 0
    for label, s in summaries:
        bits = [f"{label or 'run'}: {len(s['seeds'])} seed(s), n_train={s['runs'][0]['n_train']}"]
        for split in ("val", "test", "train"):
            if s[split]["n"]:
                bits.append(f"{split} balanced_accuracy {format_mean_sd(s[split])}")
        if s["runs"][0].get("random_weights"):
            bits.append("RANDOM backbone weights: not meaningful")
        print("; ".join(bits))
    return 0


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be written (checked before any training), or None."""
    probe_dir = folder
    while not probe_dir.exists() and probe_dir.parent != probe_dir:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK | os.X_OK):
        return (f"cannot write to {folder}: {probe_dir} is not a writable folder; choose another --out / --store")
    return None


def _run_seeds(config, pool, seeds, *, val, test, shots, fraction, store, out_dir: Path, quiet: bool, label: str,
               err_out=sys.stderr) -> dict:
    from tqdm import tqdm

    from napari_medprompt.train.seeds import train_seeds

    bars: dict = {}
    warned = []

    def on_event(seed, ev):
        if ev.kind == "start":
            if ev.message and not warned:
                warned.append(ev.message)
                print(f"WARNING: {ev.message}", file=err_out)
            if ev.metrics.get("selection") and seed == seeds[0]:
                print(f"{config.method} {label}: {ev.metrics['selection']}", file=err_out)
        elif ev.kind == "resumed":
            print(f"seed {seed}: {ev.message}", file=err_out)
        elif ev.kind == "step" and not quiet:
            bar = bars.get(seed)
            if bar is None:
                bar = bars[seed] = tqdm(total=ev.steps, desc=f"{config.method} {label} seed {seed}".strip(),
                                        unit="step", file=sys.stderr)
            bar.update(1)
            bar.set_postfix(loss=f"{ev.loss:.4f}", epoch=ev.epoch)
        elif ev.kind in ("stopped", "done") and seed in bars:
            bars.pop(seed).close()

    multi = len(seeds) > 1  # several seeds: out_dir/seed_<s>/; one: its checkpoint directly in out_dir
    cfg = config if multi else dataclasses.replace(config, out_dir=str(out_dir))
    summary = train_seeds(cfg, pool, seeds, val=val, test=test, shots=shots, fraction=fraction, store=store,
                          out_dir=str(out_dir) if multi else None, on_event=on_event)
    from napari_medprompt.io.atomic import atomic_write_text
    from napari_medprompt.train import distributed as dd

    for run in summary["runs"] if dd.is_main() else ():
        d = out_dir / f"seed_{run['seed']}" if multi else out_dir
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "metrics.json", json.dumps(run, indent=1))
    return summary


def _is_seg_checkpoint(store, item) -> bool:
    from napari_medprompt.train.checkpoints import read_metadata
    from napari_medprompt.train.task import is_seg_method

    try:
        if store:
            from napari_medprompt.train.store import ModelStore

            path = ModelStore(store).weights_path(item)
        else:
            path = item
        return is_seg_method(str(read_metadata(path).get("method")))
    except Exception:  # not readable here: the classification loader reports it
        return False


def _eval_segmentation(args, item):
    from napari_medprompt.seg_adapters.cli import load_seg_npz
    from napari_medprompt.seg_adapters.io import load_seg_adapter
    from napari_medprompt.train import distributed as dd
    from napari_medprompt.train.seg_eval import evaluate_segmentation

    dev = dd.device_for(args.device)
    model = (load_seg_adapter(store=args.store, version=item, device=dev) if args.store
             else load_seg_adapter(item, device=dev))
    data = load_seg_npz(args.data)
    if args.limit:
        data = data.subset(range(min(args.limit, len(data))))
    metrics = evaluate_segmentation(model, data, device=dev)
    metrics["checkpoint"] = f"{args.store}:{item}" if args.store else str(item)
    metrics["random_weights"] = bool(getattr(model.backbone, "random_weights", False))
    return metrics, model


def eval_main(argv: list[str] | None = None) -> int:
    """Evaluate checkpoints or store versions (several: one per seed) on a split; print the metrics and,
    with ``--out``, write ``results.csv`` / ``results.md`` (mean ± sd over the models) and ``metrics.json``.
    Under torchrun each rank predicts its shard of the images; rank 0 writes."""
    from napari_medprompt.train import distributed as dd
    from napari_medprompt.train.checkpoints import CheckpointError, load_checkpoint
    from napari_medprompt.train.data import DataError
    from napari_medprompt.train.results import results_table, write_results
    from napari_medprompt.train.seeds import evaluate
    from napari_medprompt.train.store import ModelStore, StoreError

    p = argparse.ArgumentParser(prog="medprompt-eval", description="Evaluate trained adapters (checkpoint files "
                                "or store versions, e.g. one per seed) and write a results table.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", nargs="+", help="checkpoint file(s); several = seeds of one protocol")
    src.add_argument("--store", help="model store folder (with --version, else its active version)")
    p.add_argument("--version", nargs="+", default=None, help="store version id(s), e.g. v0003 v0004 (default: the active one)")
    p.add_argument("--data", required=True, help="class-folder root or MedMNIST-style .npz")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--label", default=None, help="row label in the results table (default: method on backbone)")
    p.add_argument("--out", default=None, help="folder for results.csv, results.md and metrics.json")
    p.add_argument("--json", default=None, help="write the metrics to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        dist = dd.init_from_env(args.device)
    except RuntimeError as err:
        print(f"medprompt-eval: {err}", file=sys.stderr)
        return 2
    if args.out and _unwritable(Path(args.out)):
        print(f"medprompt-eval: {_unwritable(Path(args.out))}", file=sys.stderr)
        dd.shutdown()
        return 2
    results, label = [], args.label
    try:
        sources = args.checkpoint or (args.version or [None])
        for item in sources:
            if _is_seg_checkpoint(args.store, item):  # Dice / IoU / HD95 on a segmentation .npz
                metrics, model = _eval_segmentation(args, item)
                results.append(metrics)
                label = label or f"{model.name} on {getattr(model.backbone, 'name', '?')}"
                continue
            if args.store:
                model = ModelStore(args.store).load(item, device=dd.device_for(args.device))
                where = f"{args.store}:{model.store_version}"
            else:
                model = load_checkpoint(item, device=dd.device_for(args.device))
                where = str(item)
            data = _load_data(args.data, args.split, model.classes if Path(args.data).suffix == ".npz" else None)
            if args.limit:
                data = data.subset(range(min(args.limit, len(data))))
            if list(data.classes) != list(model.classes):
                raise DataError(f"the data's classes {data.classes!r} differ from the model's {model.classes!r}")
            metrics = evaluate(model, data, device=dd.device_for(args.device))
            metrics["checkpoint"] = where
            metrics["random_weights"] = bool(model.backbone.random_weights)
            results.append(metrics)
            label = label or f"{model.name} on {getattr(model.backbone, 'name', '?')}"
    except (CheckpointError, StoreError, DataError, ValueError, RuntimeError) as err:
        print(f"medprompt-eval: {dd.lost_peer_message(err) or err}", file=sys.stderr)
        dd.shutdown()
        return 2
    dd.shutdown()
    if not dist.is_main:
        return 0
    rows = [{"label": f"{label} ({args.split})", "runs": results,
             "note": "RANDOM backbone weights: not meaningful" if any(r["random_weights"] for r in results) else ""}]
    out = results[0] if len(results) == 1 else {"models": results}
    text = json.dumps(out, indent=1)
    if args.json:
        from napari_medprompt.io.atomic import atomic_write_text

        atomic_write_text(args.json, text)
    if args.out:
        from napari_medprompt.io.atomic import atomic_write_text

        write_results(args.out, rows)
        atomic_write_text(Path(args.out) / "metrics.json", text)
    print(text)
    print(results_table(rows)[1], file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(train_main())
