"""The lesson's commands: ``make-synthetic-foodieqa``, ``prepare-foodieqa`` and ``download-foodieqa``.

Each checks its arguments (numbers, prompt style, output folder) before any image is drawn, read or unzipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .prompts import DEFAULT_STYLE, PROMPT_STYLES

FORCE_HELP = "replace OUT even if the course did not make it (never the source data)"


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the FoodieQA subcommands to the course's command line."""
    make = subparsers.add_parser("make-synthetic-foodieqa", help="draw a synthetic FoodieQA folder")
    make.add_argument("out", help="folder to write: new, empty or made by this command (images/, sivqa_tidy.json)")
    make.add_argument("--dishes", type=int, default=40, help="number of dishes (default 40)")
    make.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    make.add_argument("--images-per-dish", type=int, default=3, help="pictures per dish (default 3)")
    make.add_argument("--force", action="store_true", help=FORCE_HELP)
    make.set_defaults(handler=_make_synthetic)

    prepare = subparsers.add_parser("prepare-foodieqa", help="validate FoodieQA and convert it for XTuner")
    prepare.add_argument("src", help="unzipped FoodieQA folder, FoodieQA.zip, or 'download'")
    prepare.add_argument("out", help="folder for train.json, test.json, validation_report.json, manifest.json")
    prepare.add_argument("--style", choices=PROMPT_STYLES, default=DEFAULT_STYLE,
                         help=f"prompt style (default {DEFAULT_STYLE})")
    prepare.add_argument("--test-fraction", type=float, default=0.25, help="share of dishes held out (default 0.25)")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the dish split (default 0)")
    prepare.add_argument("--force", action="store_true", help=FORCE_HELP)
    prepare.set_defaults(handler=_prepare)

    download = subparsers.add_parser("download-foodieqa", help="download the gated FoodieQA (needs an HF token)")
    download.add_argument("--dest", default=None, help="folder to unzip into (default RUN_DIR/data/foodieqa)")
    download.set_defaults(handler=_download)


def _make_synthetic(args: argparse.Namespace) -> int:
    from .synthetic import make_synthetic_foodieqa

    out = make_synthetic_foodieqa(args.out, args.dishes, args.seed, args.images_per_dish, force=args.force)
    print(f"synthetic FoodieQA: {out}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from ..outputs import check_output
    from ..paths import DOWNLOAD_KEYWORD
    from .defaults import resolve_data_root
    from .convert import PREPARED_KIND, check_test_fraction, prepare_foodieqa

    check_test_fraction(args.test_fraction)
    if not args.src.strip():
        raise ValueError("SRC is empty: give an unzipped FoodieQA folder, FoodieQA.zip or 'download'")
    source_path = None if args.src.strip() == DOWNLOAD_KEYWORD else Path(args.src)
    check_output(args.out, PREPARED_KIND, force=args.force, protected=[source_path])  # before any unzip or download
    prepared = prepare_foodieqa(resolve_data_root(args.src), args.out, args.style, args.test_fraction, args.seed,
                                force=args.force)
    print(prepared.report.summary())
    print(prepared.summary())
    return 0


def _download(args: argparse.Namespace) -> int:
    from .download import download_foodieqa

    print(f"FoodieQA: {download_foodieqa(args.dest)}")
    return 0
