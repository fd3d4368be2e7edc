"""``make bench``: run every benchmark, results in bench_results/ (JSON, Markdown, PNG).

The tuning benchmark compares with LiteRT when ``ai-edge-litert`` is installed (``make
bench`` installs the ``bench`` extra)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from benchmarks import bench_accuracy, bench_device, bench_schemes, bench_tuning
from tvmq.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "bench_results")
    parser.add_argument(
        "--models", type=Path, default=REPO.parent / "shared" / "models" / "mlperf_tiny"
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="accuracy on 2,000 test samples and a small grid (uniform / k-means at "
        "W4A4, W3A3, W2A8, W2A2, with and without PTQ)",
    )
    parser.add_argument(
        "--only", choices=["schemes", "device", "accuracy", "goals", "tuning"],
        help="run one benchmark only (goals: the accuracy goals on the full test sets)",
    )  # fmt: skip
    parser.add_argument(
        "--model", action="append", default=None, dest="zoo_models", metavar="NAME",
        help="accuracy benchmarks: only this shipped model (repeatable; default all)",
    )  # fmt: skip
    parser.add_argument(
        "--goal-variant", action="append", default=None, dest="goal_variants",
        choices=list(bench_accuracy.GOAL_VARIANTS), metavar="NAME",
        help="goals: only this variant of the rows below A8 (repeatable; default all: "
        f"{', '.join(bench_accuracy.GOAL_VARIANTS)})",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true",
        help="accuracy grid: keep the models and rows of a stopped run's "
        "accuracy.partial.json in --out and measure only the rest",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help="accuracy grid and goals: measure rows in N one-thread processes (rows are "
        "independent and deterministic: the same results; default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--trials", type=int, default=None,
        help="tuning benchmark: trials per model (default 300, --fast 32)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    console = Console()
    t0 = time.time()
    if args.only in (None, "schemes"):
        res = bench_schemes.run(args.out, args.models)
        if "skipped" in res:
            console.print(f"[yellow]schemes benchmark skipped: {res['skipped']}[/]")
        else:
            console.print((args.out / "schemes.md").read_text())
    if args.only in (None, "device"):
        with console.status(
            "device cost on QEMU (KWS, IC ResNet-8; W8A8, W4A8, W4A8 shared tables, W2A8)..."
        ):
            dev = bench_device.run(args.out, args.models)
        dev["targets"] = bench_device.targets(dev)
        atomic_write_json(args.out / "device.json", dev)
        atomic_write_text(args.out / "device.md", bench_device.markdown(dev))
        console.print(bench_device.markdown(dev))
    if args.only in (None, "accuracy"):
        from rich.progress import Progress

        grid = bench_accuracy.total_rows(args.fast, args.zoo_models)
        with Progress(console=console) as bar:
            task = bar.add_task("PTQ accuracy (shipped models)", total=grid)
            acc = bench_accuracy.run(
                args.out, args.fast, progress=lambda: bar.advance(task), models=args.zoo_models,
                resume=args.resume, jobs=args.jobs,
            )  # fmt: skip
        atomic_write_json(args.out / "accuracy.json", acc)
        atomic_write_text(args.out / "accuracy.md", bench_accuracy.markdown(acc))
        console.print(bench_accuracy.markdown(acc))
    if args.only in (None, "goals"):
        from rich.progress import Progress

        with Progress(console=console) as bar:
            total = bench_accuracy.goal_rows(args.zoo_models, args.goal_variants)
            task = bar.add_task("accuracy goals (full test sets)", total=total)
            res = bench_accuracy.goals(
                lambda: bar.advance(task), args.zoo_models, args.goal_variants, jobs=args.jobs
            )
        atomic_write_json(args.out / "accuracy_goals.json", res)
        atomic_write_text(args.out / "accuracy_goals.md", bench_accuracy.goals_markdown(res))
        console.print(bench_accuracy.goals_markdown(res))
    if args.only in (None, "tuning"):
        trials = args.trials or (32 if args.fast else 300)
        limit = 600 if args.fast else 3600
        res = {}
        with console.status(f"tuning on the host ({trials} trials per model)..."):
            res["host"] = bench_tuning.host(args.out, args.models, trials, limit)
        atomic_write_json(args.out / "tuning.json", res)  # keep it if the MCU part fails
        with console.status(f"tuning on QEMU ({trials} trials per model)..."):
            res["mcu"] = bench_tuning.mcu(args.out, args.models, trials, limit)
        atomic_write_json(args.out / "tuning.json", res)
        atomic_write_text(args.out / "tuning.md", bench_tuning.markdown(res))
        console.print(bench_tuning.markdown(res))
    console.print(f"bench_results written to {args.out} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
