"""``medprompt-train`` and ``medprompt-eval``: the training loop and evaluation from the command line.

    medprompt-train --data pneumoniamnist.npz --method linear-probe --backbone ViT-B-16 --shots 16 --out runs/lp
    medprompt-train --config training/configs/medmnist_fraction_linear_probe.yaml --data pneumoniamnist.npz
    medprompt-eval --checkpoint runs/lp/adapter.safetensors --data pneumoniamnist.npz --split test

``--data`` is a folder with one sub-folder of images per class, or a MedMNIST-style ``.npz``.
A ``--config`` file (YAML or JSON) gives defaults for any option (its keys are the option names with
underscores, plus ``method_options``); options on the command line win. ``--fraction`` may list
several values (the papers' 5/10/20/50/100 % protocol): one run per fraction, each in its own folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

TRAIN_KEYS = ("method", "backbone", "pretrained", "lr", "epochs", "batch_size", "weight_decay", "seed",
              "val_fraction", "patience", "device", "balanced_sampling", "amp")


def _load_config(path: str | None) -> dict:
    if not path:
        return {}
    p = Path(path)
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            cfg = yaml.safe_load(text) or {}
        else:
            cfg = json.loads(text)
    except Exception as err:
        raise SystemExit(f"cannot read config {p}: {err}") from None
    if not isinstance(cfg, dict):
        raise SystemExit(f"config {p} must be a mapping of option names to values")
    return cfg


def _load_data(path: str, split: str, classes=None):
    from napari_medprompt.train.data import from_folder, from_npz

    p = Path(path)
    if p.suffix == ".npz":
        return from_npz(p, split, classes)
    return from_folder(p)


def _parser_train() -> argparse.ArgumentParser:
    from napari_medprompt.classify.base import available_methods

    p = argparse.ArgumentParser(prog="medprompt-train", description="Train a few-shot adapter on a frozen backbone.")
    p.add_argument("--config", help="YAML/JSON file with defaults for these options")
    p.add_argument("--data", help="class-folder root or MedMNIST-style .npz")
    p.add_argument("--split", default=None, help="split of a .npz to train on (default: train)")
    p.add_argument("--classes", nargs="+", default=None, help="class names for a .npz (in label order)")
    p.add_argument("--method", choices=sorted(available_methods()), default=None)
    p.add_argument("--backbone", default=None, help="e.g. ViT-B-16, resnet50, hf-hub:..., test-vit-tiny")
    p.add_argument("--pretrained", default=None, help="tag, local weights file, or 'random'")
    p.add_argument("--shots", type=int, default=None, help="k images per class (seeded)")
    p.add_argument("--fraction", type=float, nargs="+", default=None, help="fraction(s) of the training set per class")
    p.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option (value parsed as JSON when possible), repeatable")
    for k, t in (("lr", float), ("epochs", int), ("batch_size", int), ("weight_decay", float), ("seed", int),
                 ("val_fraction", float), ("patience", int)):
        p.add_argument("--" + k.replace("_", "-"), dest=k, type=t, default=None)
    p.add_argument("--device", default=None, help="auto (default), cuda, mps or cpu")
    p.add_argument("--out", default=None, help="output folder (checkpoint + metrics.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def train_main(argv: list[str] | None = None) -> int:
    from napari_medprompt.train.data import DataError, fraction, k_shot
    from napari_medprompt.train.loop import TrainConfig

    args = _parser_train().parse_args(argv)
    cfg = _load_config(args.config)
    merged = {k: cfg[k] for k in TRAIN_KEYS if k in cfg}
    merged.update({k: getattr(args, k) for k in TRAIN_KEYS if getattr(args, k, None) is not None})
    options = dict(cfg.get("method_options") or {})
    for item in args.method_option:
        key, _, val = item.partition("=")
        options[key] = _parse_value(val)
    data_path = args.data or cfg.get("data")
    if not data_path:
        raise SystemExit("medprompt-train: --data (or 'data' in --config) is required")
    out = Path(args.out or cfg.get("out") or "medprompt-run")
    shots = args.shots if args.shots is not None else cfg.get("shots")
    fracs = args.fraction or cfg.get("fractions") or ([cfg["fraction"]] if "fraction" in cfg else [None])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        data = _load_data(data_path, args.split or cfg.get("split", "train"), args.classes or cfg.get("classes"))
        runs = []
        for frac in fracs:
            seed = merged.get("seed", 0)
            subset = k_shot(data, int(shots), seed) if shots else data
            subset = fraction(subset, float(frac), seed) if frac else subset
            run_dir = out / f"fraction_{frac:g}" if frac and len(fracs) > 1 else out
            config = TrainConfig(**merged, method_options=options, out_dir=str(run_dir))
            result = _run(config, subset, quiet=args.quiet, label=f"fraction {frac:g}" if frac else "")
            result["fraction"], result["n_images"] = frac, len(subset)
            runs.append(result)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    except (DataError, ValueError, RuntimeError) as err:
        print(f"medprompt-train: {err}", file=sys.stderr)
        return 2
    for r in runs:
        val = r.get("val") or {}
        print(f"{r.get('checkpoint')}: images={r['n_images']} val_accuracy={val.get('accuracy', float('nan')):.3f} "
              f"val_balanced_accuracy={val.get('balanced_accuracy', float('nan')):.3f}")
    return 0


def _run(config, data, quiet: bool, label: str = "") -> dict:
    from tqdm import tqdm

    from napari_medprompt.train.loop import train_iter

    bar, result = None, {}
    for ev in train_iter(config, data):
        if ev.kind == "start":
            if ev.message:
                print(f"WARNING: {ev.message}", file=sys.stderr)
        elif ev.kind == "step" and not quiet:
            if bar is None:
                bar = tqdm(total=ev.steps, desc=f"{config.method} {label}".strip(), unit="step", file=sys.stderr)
            bar.update(1)
            bar.set_postfix(loss=f"{ev.loss:.4f}", epoch=ev.epoch)
        elif ev.kind == "done":
            result = {k: v for k, v in (ev.metrics or {}).items() if k != "history"}
            result["checkpoint"] = ev.path
            result["status"] = ev.message
    if bar is not None:
        bar.close()
    return result


def eval_main(argv: list[str] | None = None) -> int:
    from napari_medprompt.train.checkpoints import CheckpointError, load_checkpoint
    from napari_medprompt.train.data import DataError
    from napari_medprompt.train.metrics import classification_metrics
    from napari_medprompt.train.predict import predict

    p = argparse.ArgumentParser(prog="medprompt-eval", description="Evaluate a trained adapter checkpoint.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="class-folder root or MedMNIST-style .npz")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write the metrics to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        model = load_checkpoint(args.checkpoint, device=args.device)
        data = _load_data(args.data, args.split, model.classes if Path(args.data).suffix == ".npz" else None)
        if args.limit:
            data = data.subset(range(min(args.limit, len(data))))
        if list(data.classes) != list(model.classes):
            raise DataError(f"the data's classes {data.classes!r} differ from the checkpoint's {model.classes!r}")
        probs = predict(model, data.images, data.masks if getattr(model, "uses_masks", False) else None, device=args.device)
    except (CheckpointError, DataError, ValueError) as err:
        print(f"medprompt-eval: {err}", file=sys.stderr)
        return 2
    metrics = classification_metrics(data.labels, probs, len(model.classes))
    metrics["checkpoint"] = str(args.checkpoint)
    metrics["random_weights"] = bool(model.backbone.random_weights)
    text = json.dumps(metrics, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(train_main())
