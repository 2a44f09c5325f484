"""Command line: ``python -m training prepare|train|orient|calibrate|evaluate|compare`` (each with
``--help``).

TensorFlow is imported only by the sub-commands that need it, so ``prepare`` and ``--help`` stay
fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from buildinfo import version_line
from training import layouts
from training.settings import (
    SplitConfig,
    TrainConfig,
    default_artifacts_dir,
    default_data_dir,
    default_weights,
)
from training.sources import OTHER_LABEL, SourcesConfig


def _artifacts_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=default_artifacts_dir(),
        help="output folder (env FASHION_ARTIFACTS_DIR; default %(default)s)",
    )


def _max_off_category_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-off-category-filed",
        type=float,
        default=TrainConfig.max_off_category_filed,
        help="most share of the calibration split's off-category photos the abstain rule may "
        "file, besides reaching the target precision (default: no cap)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Builds the argument parser of the three sub-commands.

    Returns:
        The parser; ``parse_args`` yields a namespace with ``command`` set.
    """
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version_line("fashion-train"))
    sub = parser.add_subparsers(dest="command", required=True)

    split = SplitConfig()
    p = sub.add_parser(
        "prepare",
        help="scan the images, split them, write manifest.csv",
        description="Read an image set, drop files that do not decode, split it, write "
        "manifest.csv, labels.txt and prepare_report.json. Layouts: folder per class "
        "(with train/validation/test folders, or without); Kaggle 'Fashion Product "
        "Images' (styles.csv beside images/); a path,label CSV (--labels-csv). Sets "
        "without split folders are split 70/15/15 per class with a fixed seed.",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="image folder, or a folder with styles.csv and images/ "
        "(env FASHION_DATA_DIR; default %(default)s)",
    )
    _artifacts_arg(p)
    p.add_argument(
        "--extra-labels",
        type=Path,
        default=None,
        help="feedback.csv from `python -m batch feedback`: its photos are added to the train "
        "split only (photos whose content is in any other split are dropped and reported)",
    )
    p.add_argument(
        "--labels-csv",
        type=Path,
        default=None,
        help="a CSV with the columns path,label (paths relative to the CSV); replaces --data-dir",
    )
    p.add_argument(
        "--label-column",
        default=layouts.KAGGLE_LABEL_COLUMN,
        help="styles.csv column holding the classes (default %(default)s)",
    )
    choice = p.add_mutually_exclusive_group()
    choice.add_argument(
        "--top-classes",
        type=int,
        default=None,
        metavar="N",
        help="keep the N most frequent labels among rows with an image (default "
        f"{layouts.KAGGLE_TOP_CLASSES} for styles.csv, all labels for --labels-csv)",
    )
    choice.add_argument(
        "--classes",
        default=None,
        metavar="A,B,C",
        help="keep exactly these comma-separated labels (CSV layouts)",
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=split.seed,
        help="seed of the split of a set without split folders (default %(default)s)",
    )
    plan = SourcesConfig()
    p.add_argument(
        "--extra-dir",
        type=Path,
        default=os.environ.get("FASHION_EXTRA_DIR") or None,
        help="more folder-per-class photos of the same labels (env FASHION_EXTRA_DIR; "
        "default none)",
    )
    p.add_argument(
        "--offclass-dir",
        type=Path,
        default=os.environ.get("FASHION_OFFCLASS_DIR") or None,
        help="folder-per-original-label photos of none of the labels, taught as the "
        f"'{OTHER_LABEL}' class (env FASHION_OFFCLASS_DIR; default none)",
    )
    p.add_argument(
        "--calibration",
        type=float,
        default=plan.calibration,
        help="fraction of each validation class (and of the extra photos not trained on) "
        "kept for fitting the abstain rule only (default %(default)s)",
    )
    p.add_argument(
        "--offclass-keep-out",
        default=",".join(plan.offclass_keep_out_labels),
        help="comma-separated off-category folders kept out whole, for evaluation only",
    )
    p.add_argument(
        "--offclass-exclude",
        default=",".join(plan.offclass_exclude),
        help="comma-separated off-category folders not used at all (default %(default)s)",
    )

    d = TrainConfig()
    t = sub.add_parser(
        "train",
        help="train the MobileNetV2 classifier",
        description="Two-phase MobileNetV2 transfer learning on the prepared "
        "manifest; writes model.keras, history.json, training_run.json.",
    )
    _artifacts_arg(t)
    t.add_argument("--alpha", type=float, default=d.alpha, help="width multiplier (%(default)s)")
    t.add_argument(
        "--input-size",
        type=int,
        default=d.input_size,
        help="square input side in pixels (%(default)s)",
    )
    t.add_argument(
        "--weights",
        default=None,
        help="no-top .h5 weights, or 'imagenet' to download (default "
        f"{default_weights(d.alpha)} for the chosen alpha)",
    )
    t.add_argument(
        "--head-epochs",
        type=int,
        default=d.head_epochs,
        help="max epochs with the base frozen (%(default)s)",
    )
    t.add_argument(
        "--finetune-epochs",
        type=int,
        default=d.finetune_epochs,
        help="max epochs with the top of the base unfrozen; 0 skips (%(default)s)",
    )
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="(%(default)s)")
    t.add_argument(
        "--head-lr",
        type=float,
        default=d.head_learning_rate,
        help="Adam learning rate, phase 1 (%(default)s)",
    )
    t.add_argument(
        "--finetune-lr",
        type=float,
        default=d.finetune_learning_rate,
        help="Adam learning rate, phase 2, cosine-decayed (%(default)s)",
    )
    t.add_argument(
        "--finetune-layers",
        type=int,
        default=d.finetune_layers,
        help="base layers unfrozen in phase 2, counted from the top (%(default)s)",
    )
    t.add_argument("--dropout", type=float, default=d.dropout, help="(%(default)s)")
    t.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="(%(default)s)")
    t.add_argument(
        "--zoom",
        type=float,
        default=d.zoom,
        help="max random zoom-in fraction of the augmentation (%(default)s)",
    )
    t.add_argument(
        "--translate",
        type=float,
        default=d.translate,
        help="max random shift fraction of the augmentation (%(default)s)",
    )
    t.add_argument(
        "--patience",
        type=int,
        default=d.patience,
        help="early-stopping patience on validation loss (%(default)s)",
    )
    t.add_argument(
        "--no-class-weights",
        action="store_true",
        help="do not weight the loss against the class imbalance",
    )
    t.add_argument(
        "--turn-probability",
        type=float,
        default=d.turn_probability,
        help="chance a training image is turned 90/180/270 degrees (%(default)s)",
    )
    t.add_argument(
        "--validate-turned",
        action="store_true",
        help="early stopping reads validation upright and once turned (seeded random turn)",
    )
    t.add_argument(
        "--orientation-head",
        action="store_true",
        help="after training, fit an orientation step: photos a 4-way head on the pooled "
        "features calls turned are turned back for a second pass (model.keras has it; "
        "classifier.keras is the upright model alone)",
    )
    t.add_argument(
        "--target-precision",
        type=float,
        default=d.target_precision,
        help="precision of filed photos the abstain rule is fitted to reach (%(default)s)",
    )
    _max_off_category_arg(t)
    t.add_argument("--seed", type=int, default=d.seed, help="(%(default)s)")
    t.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="Keras verbosity: 1 progress bar per epoch, 2 one line (%(default)s)",
    )

    o = sub.add_parser(
        "orient",
        help="add the orientation step to a trained upright model.keras",
        description="What train --orientation-head does after training: fit the orientation "
        "head (train split, four turns) and its threshold (validation), keep the upright model "
        "as classifier.keras, write the oriented model.keras, refit the abstain rule.",
    )
    _artifacts_arg(o)
    o.add_argument("--seed", type=int, default=d.seed, help="(%(default)s)")
    o.add_argument(
        "--target-precision",
        type=float,
        default=d.target_precision,
        help="precision of filed photos the abstain rule must reach (%(default)s)",
    )
    _max_off_category_arg(o)

    c = sub.add_parser(
        "calibrate",
        help="refit the abstain rule of model.keras on the calibration split",
        description="Fit temperature and thresholds of model.keras on the calibration split "
        "(upright and turned), write abstain_rule.json and calibration.json (train does this "
        "too; this refits without training).",
    )
    _artifacts_arg(c)
    c.add_argument(
        "--target-precision",
        type=float,
        default=d.target_precision,
        help="precision of filed photos the rule must reach (%(default)s)",
    )
    _max_off_category_arg(c)

    e = sub.add_parser(
        "evaluate",
        help="score model.keras on the test split",
        description="Score model.keras on a split (test by default); write "
        "metrics.json, confusion_matrix.png, training_curves.png.",
    )
    _artifacts_arg(e)
    e.add_argument(
        "--split",
        default="test",
        choices=("train", "validation", "calibration", "test"),
        help="(%(default)s)",
    )
    e.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="(%(default)s)")

    m = sub.add_parser(
        "compare",
        help="score published versions side by side on the test split, in one run",
        description="Load each version's serving_default signature from the base path and score "
        "it on the manifest's test photos (upright and turned), and on its kept-out off-category "
        "photos, each version at its own rule; print a Markdown table and write compare.json. "
        "Reads the test split: once per published candidate, never to choose.",
    )
    _artifacts_arg(m)
    m.add_argument("--base-path", type=Path, default=Path("models/fashion"), help="(%(default)s)")
    m.add_argument(
        "--versions", type=int, nargs="+", required=True, help="version numbers, e.g. 1 2"
    )
    m.add_argument(
        "--min-confidence",
        type=float,
        default=0.5,
        help="top-1 rule of a version without an abstain rule (%(default)s)",
    )
    return parser


def _prepare(args: argparse.Namespace) -> dict:
    """Runs ``prepare`` for the layout the arguments name; prints skipped rows to stderr."""
    config = SplitConfig(seed=args.split_seed)
    classes = args.classes.split(",") if args.classes is not None else None
    if args.labels_csv is not None or layouts.is_kaggle_layout(args.data_dir):
        from training.prepare_csv import prepare_table

        if args.labels_csv is not None:
            table, top = layouts.read_labels_csv(args.labels_csv), args.top_classes
        else:
            table = layouts.read_kaggle(args.data_dir, args.label_column)
            top = args.top_classes
            if top is None and classes is None:
                top = layouts.KAGGLE_TOP_CLASSES
        report = prepare_table(
            table, args.artifacts, config, top=top, classes=classes, calibration=args.calibration
        )
        for row in report["skipped_rows"]:
            print(f"skipped line {row['line']} ({row['reason']}): {row['detail']}", file=sys.stderr)
        return report
    if args.top_classes is not None or classes is not None:
        raise ValueError("--top-classes and --classes apply to styles.csv and --labels-csv sets")
    from training.manifest import prepare

    plan = SourcesConfig(
        calibration=args.calibration,
        offclass_keep_out_labels=tuple(filter(None, args.offclass_keep_out.split(","))),
        offclass_exclude=tuple(filter(None, args.offclass_exclude.split(","))),
        seed=args.split_seed,
    )
    report = prepare(
        args.data_dir,
        args.artifacts,
        config,
        extra_dir=args.extra_dir,
        offclass_dir=args.offclass_dir,
        sources_config=plan,
    )
    for item in report["rejected"]:
        print(f"rejected {item['path']}: {item['error']}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    """Runs one sub-command.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The process exit status (0 on success).
    """
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "prepare":
        try:
            report = _prepare(args)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        summary = {
            "layout": report["layout"],
            "totals": report["totals"],
            "labels": report["labels"],
            "rejected": len(report["rejected"]),
        }
        if "skipped_rows" in report:
            summary["skipped_rows"] = len(report["skipped_rows"])
        if args.extra_labels is not None:
            from training import extra_labels

            try:
                report = extra_labels.apply(args.artifacts, args.extra_labels)
            except (FileNotFoundError, ValueError) as exc:
                print(f"error: --extra-labels: {exc}", file=sys.stderr)
                return 2
            for item in report["extra_labels"]["dropped"]:
                print(f"extra label dropped {item['path']}: {item['reason']}", file=sys.stderr)
            summary["totals"] = report["totals"]
            summary["extra_labels_added"] = report["extra_labels"]["added"]
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    if args.command == "train":
        from training.train import train

        config = TrainConfig(
            alpha=args.alpha,
            input_size=args.input_size,
            weights=args.weights or "",
            head_epochs=args.head_epochs,
            finetune_epochs=args.finetune_epochs,
            batch_size=args.batch_size,
            head_learning_rate=args.head_lr,
            finetune_learning_rate=args.finetune_lr,
            finetune_layers=args.finetune_layers,
            dropout=args.dropout,
            label_smoothing=args.label_smoothing,
            zoom=args.zoom,
            translate=args.translate,
            patience=args.patience,
            class_weights=not args.no_class_weights,
            turn_probability=args.turn_probability,
            validate_turned=args.validate_turned,
            orientation_head=args.orientation_head,
            target_precision=args.target_precision,
            max_off_category_filed=args.max_off_category_filed,
            seed=args.seed,
        )
        argv_record = ["python", "-m", "training", *(argv if argv is not None else sys.argv[1:])]
        record = train(args.artifacts, config, verbose=args.verbose, argv=argv_record)
        print(
            json.dumps(
                {
                    "epochs_run": record["epochs_run"],
                    "best_validation": record["best_validation"],
                    "wall_time_seconds": record["wall_time_seconds"],
                }
            )
        )
        return 0
    if args.command == "orient":
        from training.orient import attach

        record = attach(
            args.artifacts, args.seed, args.target_precision, args.max_off_category_filed
        )
        print(json.dumps({k: record[k] for k in ("threshold", "chosen", "seconds")}))
        return 0
    if args.command == "calibrate":
        from training.rule import calibrate

        document = calibrate(
            args.artifacts,
            args.target_precision,
            max_off_category_filed=args.max_off_category_filed,
            argv=["python", "-m", "training", *(argv if argv is not None else sys.argv[1:])],
        )
        print(json.dumps({k: v for k, v in document.items() if k != "fitted_on"}))
        return 0
    if args.command == "compare":
        from training.compare import compare, table

        try:
            result = compare(
                args.base_path, args.versions, args.artifacts, min_confidence=args.min_confidence
            )
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(table(result))
        return 0
    from training.evaluate import evaluate

    result = evaluate(args.artifacts, split=args.split, verbose=args.verbose)
    print(
        json.dumps(
            {
                "split": result["split"],
                "n": result["n"],
                "accuracy": round(result["accuracy"], 4),
                "macro_f1": round(result["macro_avg"]["f1"], 4),
            }
        )
    )
    return 0
