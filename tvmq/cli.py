"""The ``tvmq`` command line.

Exit codes: 0 success; 1 a user error (bad input, bad option, missing file or package),
reported as one line ``tvmq: error: ...``; 2 an internal error (a bug: the traceback is
printed; please report it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from pathlib import Path

from . import __version__
from .errors import TvmqError

EXIT_OK, EXIT_USER, EXIT_INTERNAL = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors mapped to exit code 1 (a user error), not 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER, f"{self.prog}: error: {message}\n")


def _cmd_schemes(args) -> int:
    from .schemes import get_scheme, list_schemes

    out = {}
    for name in list_schemes():
        cls = get_scheme(name)
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        out[name] = {"options": fields, "doc": doc}
    if args.json:
        print(json.dumps(out, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title="registered quantization schemes")
    table.add_column("scheme")
    table.add_column("options (defaults)")
    table.add_column("description")
    for name, info in out.items():
        opts = ", ".join(f"{k}={v!r}" for k, v in info["options"].items())
        table.add_row(name, opts, info["doc"])
    Console().print(table)
    return EXIT_OK


def _cmd_weights(args) -> int:
    from .analysis import sqnr_table
    from .frontend import read_tflite_weights
    from .schemes import get_scheme

    for s in args.scheme:
        get_scheme(s)  # fail fast on an unknown name, before any work
    layers = read_tflite_weights(args.model)
    if not layers:
        raise TvmqError(f"{args.model} has no conv, depthwise-conv or dense weights")
    if args.json:
        rows = sqnr_table(layers, args.scheme, args.bits, granularity=args.granularity)
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console()
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("quantizing", total=len(args.scheme) * len(args.bits))
        rows = sqnr_table(
            layers,
            args.scheme,
            args.bits,
            granularity=args.granularity,
            progress=lambda *_: prog.advance(task),
        )
    numel = sum(layer.weight.size for layer in layers)
    table = Table(
        title=f"{Path(args.model).name}: {len(layers)} layers, {numel:,} weights, "
        f"per {args.granularity}: SQNR dB (bits/weight incl. codebooks)"
    )
    table.add_column("scheme")
    for b in args.bits:
        table.add_column(f"W{b}", justify="right")
    for s in args.scheme:
        cells = []
        for r in (r for r in rows if r.scheme == s):
            db = "lossless" if r.sqnr_db == float("inf") else f"{r.sqnr_db:.1f}"
            cells.append(f"{db} ({r.bits_per_weight:.2f})")
        table.add_row(s, *cells)
    console.print(table)
    return EXIT_OK


def _cmd_demo(args) -> int:
    from . import demo

    return demo.main(["--out", str(args.out)] if args.out else [])


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tvmq",
        description="Non-linear (codebook / LUT) quantization of tinyML models on Apache TVM.",
        epilog="exit codes: 0 ok, 1 user error (one-line message), 2 internal error (traceback)",
    )
    parser.add_argument("--version", action="version", version=f"tvmq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "schemes",
        help="list the registered quantization schemes and their options",
        description="List the registered quantization schemes and their options.",
        epilog="example: tvmq schemes --json",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_schemes)

    p = sub.add_parser(
        "weights",
        help="weight SQNR and size of a model under each scheme and bit width",
        description="Quantize every conv / depthwise / dense weight of a TFLite model with "
        "each scheme and bit width; print model weight SQNR and bits per weight (codes plus "
        "float32 codebooks).",
        epilog="example: tvmq weights ../shared/models/mlperf_tiny/kws_dscnn_float32.tflite "
        "--scheme uniform kmeans --bits 2 4",
    )
    p.add_argument("model", help="a .tflite model file")
    p.add_argument("--scheme", nargs="+", default=["uniform", "kmeans", "nf"], help="scheme names")
    p.add_argument("--bits", nargs="+", type=int, default=[2, 4, 8], help="bit widths (2-8)")
    p.add_argument("--granularity", choices=["channel", "tensor"], default="channel")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_weights)

    p = sub.add_parser(
        "demo",
        help="run the main demo on real data (what `make demo` runs)",
        description="Run the demo: quantize Fashion-MNIST-trained and MLPerf Tiny weights.",
        epilog="example: tvmq demo --out /tmp/tvmq-demo",
    )
    p.add_argument("--out", type=Path, default=None, help="output directory")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    try:
        return args.func(args)
    except TvmqError as exc:
        print(f"tvmq: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("tvmq: interrupted", file=sys.stderr)
        return EXIT_USER
    except Exception:
        traceback.print_exc()
        print(
            "tvmq: internal error (a bug in tvmq); please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
