"""The Triton flags of ``otel-logbert export`` (wired by ``otel_logbert.commands.export``):

    def register(subparsers):
        p = subparsers.add_parser("export", ...)
        ...
        add_triton_arguments(p)

    def run(args):
        export_onnx(args.bundle)
        if args.triton_repo:
            print(write_triton_from_args(args))

    otel-logbert export --bundle B --triton-repo model_repository                       # GPU, onnxruntime
    otel-logbert export --bundle B --triton-repo model_repository --fp16 --instances 2  # + TensorRT FP16
    otel-logbert export --bundle B --triton-repo repo --triton-backend python           # python backend
"""

from __future__ import annotations

import argparse
from pathlib import Path

from otel_logbert.triton import repository as r


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 64,128,256") from None


def add_triton_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--triton-*`` flags (a group titled "Triton model repository")."""
    g = parser.add_argument_group("Triton model repository", "written when --triton-repo is given; see docs/triton.md")
    g.add_argument("--triton-repo", type=Path, metavar="PATH",
                   help="also write the model into this Triton model repository")
    g.add_argument("--triton-backend", choices=r.BACKENDS, default="onnxruntime",
                   help="onnxruntime: platform onnxruntime_onnx on GPUs (default); python: model.py running "
                        "the same model.onnx with ONNX Runtime on the CPU, for Triton builds without it")
    g.add_argument("--triton-model-name", metavar="NAME",
                   help="model name in the repository (default: <model>-<weights digest>, the name the "
                        "sidecar's scoring.triton.model_name: null resolves to)")
    g.add_argument("--triton-version", type=int, default=r.DEFAULT_VERSION, metavar="N",
                   help=f"version directory to write (default {r.DEFAULT_VERSION})")
    g.add_argument("--keep-versions", type=int, default=r.DEFAULT_KEEP_VERSIONS, metavar="N",
                   help=f"version_policy latest: versions Triton serves at once (default {r.DEFAULT_KEEP_VERSIONS})")
    g.add_argument("--max-batch-size", type=int, default=r.DEFAULT_MAX_BATCH_SIZE, metavar="N",
                   help=f"largest batch Triton forms (default {r.DEFAULT_MAX_BATCH_SIZE})")
    g.add_argument("--no-dynamic-batching", dest="dynamic_batching", action="store_false",
                   help="leave Triton's dynamic batcher off (each request runs alone)")
    g.add_argument("--max-queue-delay-us", type=int, default=r.DEFAULT_MAX_QUEUE_DELAY_US, metavar="US",
                   help="how long a request may wait for others to batch with, in microseconds "
                        f"(default {r.DEFAULT_MAX_QUEUE_DELAY_US})")
    g.add_argument("--preferred-batch-sizes", type=_sizes, metavar="N,N,...",
                   default=r.DEFAULT_PREFERRED_BATCH_SIZES,
                   help="batch sizes that run at once without waiting (default "
                        f"{','.join(map(str, r.DEFAULT_PREFERRED_BATCH_SIZES))}; '' for none)")
    g.add_argument("--instances", type=int, default=r.DEFAULT_INSTANCES, metavar="N",
                   help=f"model instances (per GPU for onnxruntime; default {r.DEFAULT_INSTANCES})")
    g.add_argument("--tensorrt", action="store_true",
                   help="onnxruntime backend: run the graph through ONNX Runtime's TensorRT accelerator")
    g.add_argument("--fp16", action="store_true", help="TensorRT in FP16 precision (implies --tensorrt)")
    g.add_argument("--triton-threads", type=int, default=r.DEFAULT_THREADS, metavar="N",
                   help=f"python backend: ONNX Runtime threads per instance (default {r.DEFAULT_THREADS})")


def write_triton_from_args(args: argparse.Namespace) -> Path:
    """``write_triton_repository`` with the flags of ``add_triton_arguments``; returns the model
    directory. Raises ``UserError`` for bad flag values or a bundle without ``model.onnx``."""
    return r.write_triton_repository(
        args.bundle,
        args.triton_repo,
        args.triton_backend,
        model_name=args.triton_model_name,
        version=args.triton_version,
        keep_versions=args.keep_versions,
        max_batch_size=args.max_batch_size,
        dynamic_batching=args.dynamic_batching,
        max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=args.preferred_batch_sizes,
        instances=args.instances,
        tensorrt=args.tensorrt,
        fp16=args.fp16,
        threads=args.triton_threads,
    )
