"""``otel-logbert export``: add ``model.onnx`` to a bundle (dynamic batch and sequence axes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from otel_logbert.extras import require
from otel_logbert.triton.cli import add_triton_arguments, write_triton_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a bundle's model to ONNX (and a Triton repository)")
    p.add_argument("--bundle", required=True, type=Path, metavar="DIR")
    add_triton_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require("train", "export")
    from otel_logbert.export import export_onnx

    print(export_onnx(args.bundle))
    if args.triton_repo:
        print(write_triton_from_args(args))
    return 0
