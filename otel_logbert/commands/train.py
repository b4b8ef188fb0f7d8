"""``otel-logbert train``: normal sessions -> a model bundle (weights, vocabulary, thresholds, ONNX)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from otel_logbert.bundle import MODELS
from otel_logbert.errors import UserError
from otel_logbert.extras import require
from otel_logbert.training.calibration import CALIBRATIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model on normal sessions and write a bundle")
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--train", required=True, type=Path, metavar="FILE",
                   help="normal sessions: DeepLog lines, CSV id,sequence, or raw log lines with --session-regex")
    p.add_argument("--out", required=True, type=Path, metavar="BUNDLE_DIR")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--session-regex", default=None, metavar="RE",
                   help=r"raw log input: session id regex, e.g. HDFS 'blk_-?\d+'")
    p.add_argument("--window", default=None, metavar="SIZE[/STEP]",
                   help="raw log input without session ids: one session per window; time windows '300s/60s' "
                        "(need --timestamp-regex) or line windows '100/20'; tumbling when STEP is left out")
    p.add_argument("--content-regex", default=None, metavar="RE",
                   help="with --window: the message part of a line (group 'content'), or a preset: hdfs, bgl")
    p.add_argument("--timestamp-regex", default=None, metavar="RE",
                   help="with time windows: group 1 = unix seconds, or a preset: bgl")
    p.add_argument("--masking", default="hdfs", help="masking preset for raw log input (default: hdfs)")
    p.add_argument("--config", type=Path, default=None, help="YAML with model: and training: sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one model/training parameter (YAML value), repeatable")
    p.add_argument("--calibration", choices=CALIBRATIONS, default=None,
                   help="how the threshold is chosen (default: the config's, auto): quantile / max = the config's "
                        "quantile / the largest score of one validation split; pot = a tail model of k-fold "
                        "out-of-fold normal scores at --target-fpr; auto = quantile, or pot when the validation "
                        "split would hold fewer than 1 / target_fpr sessions (see docs/calibration.md)")
    p.add_argument("--target-fpr", type=float, default=None, metavar="Q",
                   help="the false-alarm rate on normal sessions the threshold is meant for: pot sets the threshold "
                        "for it, every rule warns when too few sessions calibrate it (default: the config's, 0.002)")
    p.add_argument("--no-export", action="store_true", help="skip writing model.onnx")
    p.add_argument("--semantic", action="store_true",
                   help="raw log input: also write semantic.json (training template embeddings, min_cosine, "
                        "the centroid baseline); needs the semantic extra")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def run(args: argparse.Namespace) -> int:
    require("train", "train")
    from otel_logbert.export import export_onnx
    from otel_logbert.training.baselines import fit_baselines, save_baselines
    from otel_logbert.training.data import RawWindows, read_sessions, split_normal
    from otel_logbert.training.trainer import save_trained, train_model

    if args.window and args.session_regex:
        raise UserError("--window and --session-regex exclude each other (windows are for logs without ids)")
    window = RawWindows(args.window, args.content_regex, args.timestamp_regex) if args.window else None
    data = read_sessions(args.train, session_regex=args.session_regex, masking=args.masking, window=window)
    if args.semantic and data.drain_state is None:
        raise UserError("--semantic needs raw log lines (--session-regex) or a learn file with its parser state")
    overrides = parse_overrides(args.set)
    if args.calibration is not None:
        overrides["calibration"] = args.calibration
    if args.target_fpr is not None:
        overrides["target_fpr"] = args.target_fpr
    model, vocab, threshold, metadata = train_model(
        args.model, data.sessions, epochs=args.epochs, seed=args.seed, device=args.device,
        config_path=args.config, overrides=overrides, progress=not args.quiet,
    )
    if args.model == "fastlogad":
        from otel_logbert.models.fastlogad import separation_warning

        member_losses = metadata["ensemble"]["losses"] if "ensemble" in metadata else [metadata["losses"]]
        for member, losses in enumerate(member_losses):
            separation = separation_warning(losses)
            if separation:
                if len(member_losses) > 1:
                    separation = f"ensemble member {member + 1}: {separation}"
                metadata.setdefault("warnings", []).append(separation)
                print(f"warning: {args.train}: {separation}", file=sys.stderr)
    if threshold.get("too_small"):
        print(f"warning: {args.train}: {len(data.sessions)} normal sessions are too few to calibrate target_fpr "
              f"{threshold['target_fpr']:g}: {_calibration_words(threshold)}", file=sys.stderr)
    metadata["train_file"] = str(args.train)
    metadata["sessions_in_file"] = len(data.sessions)
    if window is not None:
        metadata["window"] = {"spec": window.spec, "content_regex": window.content_regex,
                              "timestamp_regex": window.timestamp_regex, "masking": args.masking}
    bundle = save_trained(args.out, args.model, model.cpu(), vocab, threshold, metadata, data.drain_state)
    if not args.no_export:
        export_onnx(bundle.path)
    train_split, val_split = split_normal(data.sessions, metadata["training"]["val_fraction"], args.seed)
    save_baselines(bundle.path, fit_baselines(train_split, val_split, vocab, threshold["quantile"]))
    if args.semantic:
        from otel_logbert.parsing.semantic import MiniLMEncoder, fit_bundle_index, save_index

        index = fit_bundle_index(data.drain_state, vocab, data.sessions, MiniLMEncoder(),
                                 val_fraction=metadata["training"]["val_fraction"], seed=args.seed,
                                 quantile=threshold["quantile"])
        save_index(bundle.path, index)
    print(json.dumps({
        "bundle": str(bundle.path), "model_version": bundle.model_version, "sessions": len(data.sessions),
        "train_seconds": metadata["train_seconds"], "threshold": threshold["threshold"],
        "calibration": threshold["calibration"], "target_fpr": threshold.get("target_fpr"),
        "detection": threshold["detection"], "ensemble": metadata["training"]["ensemble"],
        "onnx": not args.no_export, "semantic": args.semantic,
    }))
    return 0


def _calibration_words(threshold: dict) -> str:
    """What the too-small warning says about how the threshold was chosen instead."""
    need = f"{1 / threshold['target_fpr']:.0f}"
    if threshold["calibration"] == "pot":
        rule = threshold["tail"]["rule"]
        how = {"max": "the largest", "gpd": "a tail-model quantile"}.get(rule, "an empirical quantile")
        return f"that needs >= {need}; the threshold is {how} of the out-of-fold scores"
    return (f"the validation split holds {threshold['validation_sessions']} (that needs >= {need}); the threshold "
            f"is its {threshold['quantile']:g} quantile")
