"""Command line: ``python -m export [export] ...``, ``python -m export verify``, ``... list``.

Exit status: 0 on success; 1 when an export is refused or fails, or a verification fails;
2 for a usage error (argparse).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from buildinfo import version_line

COMMANDS = ("export", "verify", "list")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Publish a trained Keras model as a versioned TF Serving SavedModel, verify "
        "a version folder, or list the versions of a model base path. Without a "
        "command, 'export' is assumed.",
    )
    parser.add_argument("--version", action="version", version=version_line("fashion-export"))
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export",
        help="export a .keras model as <base-path>/<version>/ (the default command)",
        description="Write <base-path>/<version>/ through a staging folder: SavedModel with "
        "signature serving_default, assets.extra/{labels.txt, model_card.json, "
        "tf_serving_warmup_requests[, abstain_rule.json]}; verify it, fsync, rename "
        "atomically.",
    )
    export.add_argument("--model", type=Path, required=True, help="trained Keras model (.keras)")
    export.add_argument(
        "--base-path",
        type=Path,
        required=True,
        help="model base path, e.g. models/fashion (created if missing)",
    )
    export.add_argument(
        "--version",
        type=int,
        default=None,
        help="version number to publish (default: highest existing + 1); an "
        "existing version is never overwritten",
    )
    export.add_argument(
        "--artifacts",
        type=Path,
        default=Path(os.environ.get("FASHION_ARTIFACTS_DIR", "artifacts")),
        help="training artifacts folder with labels.txt, training_run.json, "
        "metrics.json (default: $FASHION_ARTIFACTS_DIR or artifacts)",
    )
    export.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels file, one per line in class-id order (default: <artifacts>/labels.txt)",
    )
    export.add_argument(
        "--model-name",
        default=None,
        help="served model name for the warm-up requests and card "
        "(default: the base path's folder name)",
    )
    export.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data set whose test split gives the warm-up and comparison images "
        "(default: the test split of <artifacts>/manifest.csv, else $FASHION_DATA_DIR; "
        "synthetic images when unavailable)",
    )
    rule = export.add_mutually_exclusive_group()
    rule.add_argument(
        "--abstain-rule",
        type=Path,
        default=None,
        help="abstain rule (abstain_rule.json from training) to build into the signature: "
        "calibrated probabilities plus known_probability, abstain, abstain_reason outputs "
        "(default: abstain_rule.json beside --model if present)",
    )
    rule.add_argument(
        "--no-abstain-rule",
        action="store_true",
        help="export the plain signature (probabilities, classes) even if a rule file is "
        "beside the model",
    )
    verify = commands.add_parser(
        "verify",
        help="check a version folder, report every check",
        description="Check a version folder against the SavedModel "
        "contract; exit 1 if any check fails.",
    )
    verify.add_argument("folder", type=Path, help="version folder, e.g. models/fashion/1")
    verify.add_argument(
        "--model",
        type=Path,
        default=None,
        help="also compare outputs with this Keras model on sample images",
    )
    verify.add_argument(
        "--as-version",
        type=int,
        default=None,
        metavar="N",
        help="the folder is staged under another name (e.g. models/fashion/.incoming-7) and is "
        "to be renamed to version N: check the model card says N instead of checking the name",
    )
    verify.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="sample images for --model (default: $FASHION_DATA_DIR)",
    )
    listing = commands.add_parser("list", help="list versions with accuracy and creation time")
    listing.add_argument("base_path", type=Path, help="model base path, e.g. models/fashion")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _export(args: argparse.Namespace, argv: list[str]) -> int:
    from export.errors import ExportError
    from export.publish import ExportRequest, publish

    request = ExportRequest(
        model=args.model,
        base_path=args.base_path,
        version=args.version,
        artifacts=args.artifacts,
        labels=args.labels,
        model_name=args.model_name,
        data_dir=args.data_dir,
        command=shlex.join(["python", "-m", "export", *argv]),
        abstain_rule=args.abstain_rule,
        find_rule=not args.no_abstain_rule,
    )
    try:
        target = publish(request)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from export import samples, signature, verify

    reference = sample_images = None
    if args.model is not None:
        import keras

        import training.orientation  # noqa: F401  registers the orientation step for load_model

        reference = keras.models.load_model(args.model, compile=False)
        size = signature.input_size(reference)
        sample_images = samples.load(32, size, args.data_dir).images
    checks = verify.verify(
        args.folder, reference=reference, samples=sample_images, as_version=args.as_version
    )
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<14} {check.detail}")
    ok = verify.passed(checks)
    print(f"{args.folder}: {'verified' if ok else 'FAILED'}")
    return 0 if ok else 1


def _list(args: argparse.Namespace) -> int:
    from export import listing
    from export.errors import LayoutError

    if not args.base_path.is_dir():
        print(f"error: {args.base_path} is not a directory", file=sys.stderr)
        return 1
    try:
        rows = listing.versions(args.base_path)
    except LayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        sys.stdout.write(listing.format_table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status (0 ok, 1 refused/failed).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv = ["export", *argv]
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.command == "export":
        return _export(args, argv[1:])
    if args.command == "verify":
        return _verify(args)
    return _list(args)


if __name__ == "__main__":
    sys.exit(main())
