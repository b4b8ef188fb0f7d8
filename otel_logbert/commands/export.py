"""``otel-logbert export``: add ``model.onnx`` to a bundle (dynamic batch and sequence axes)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a bundle's model to ONNX (and a Triton repository)")
    p.add_argument("--bundle", required=True, type=Path, metavar="DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from otel_logbert.export import export_onnx

    print(export_onnx(args.bundle))
    return 0
