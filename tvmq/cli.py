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
from .evaluate import DATASETS

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


def _deploy_data(kind: str, shape: tuple, n: int, split: str, seed: int):
    """``(inputs (n, *shape) float32, labels or None)`` for ``--data``."""
    import numpy as np

    if kind in DATASETS:
        from .evaluate import load_split

        x, y = load_split(kind, split)
        if int(np.prod(shape)) != int(np.prod(x.shape[1:])):
            raise TvmqError(
                f"--data {kind} has samples of shape {tuple(x.shape[1:])}; the model takes {shape}"
            )
        idx = np.random.default_rng(seed).choice(x.shape[0], min(n, len(x)), replace=False)
        return x[idx].reshape(len(idx), *shape), y[idx]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), None


def _calib_data(spec: str, shape: tuple, n: int):
    """Calibration samples for ``--calib``: a data set name (:data:`DATASETS`) or ``random``
    (train split, a seeded draw of ``n``) or a ``.npy`` file of samples shaped
    ``(N, *input shape)``."""
    import numpy as np

    from .errors import DataError

    if spec in (*DATASETS, "random"):
        xs, _ = _deploy_data(spec, shape, n, "train", seed=1)
        return list(xs)
    path = Path(spec)
    if path.suffix != ".npy":
        raise TvmqError(
            f"--calib takes fashion-mnist, watch-imu, digits, random or a .npy file, got {spec!r}"
        )
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read calibration data {path}: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{path}: calibration data must be numeric, got dtype {arr.dtype}")
    if arr.ndim < 1 or arr.shape[0] == 0 or arr[0].size != int(np.prod(shape)):
        raise DataError(
            f"{path}: calibration data must be (N, *{shape}) samples, got shape {arr.shape}"
        )
    return [a.reshape(shape).astype(np.float32) for a in arr[:n]]


def _per_layer(items: list[str]) -> tuple[tuple[str, dict], ...]:
    """``PATTERN:key=value,key=value`` (values parsed as JSON where they are) as overrides."""
    out = []
    for item in items:
        pattern, sep, opts = item.partition(":")
        if not sep or not pattern or not opts:
            raise TvmqError(f"--per-layer takes PATTERN:key=value[,key=value], got {item!r}")
        d = {}
        for kv in opts.split(","):
            key, eq, value = kv.partition("=")
            if not eq or not key.strip():
                raise TvmqError(f"--per-layer {item!r}: {kv!r} is not key=value")
            try:
                d[key.strip()] = json.loads(value)
            except ValueError:
                d[key.strip()] = value
        out.append((pattern, d))
    return tuple(out)


def _ptq_options(p) -> None:
    p.add_argument(
        "--ptq", action="store_true",
        help="the whole PTQ pipeline: --cle, --layerwise, --bias-correction outputs",
    )  # fmt: skip
    p.add_argument(
        "--cle", action="store_true",
        help="cross-layer equalization (then activation-aware, with quantized activations)",
    )  # fmt: skip
    p.add_argument(
        "--layerwise", action="store_true",
        help="layer-wise PTQ of codebooks (with quantized activations: fitted again, layer "
        "after layer, on the inputs the quantized network gives each layer)",
    )  # fmt: skip
    p.add_argument(
        "--bias-correction", nargs="?", const="outputs", default=None,
        choices=["weights", "outputs"],
        help="give back each layer's mean output shift through its bias: measured on the "
        "quantized network (outputs, the default) or from weight quantization alone",
    )  # fmt: skip
    p.add_argument(
        "--range-search", action="store_true",
        help="last, with quantized activations: loss-aware activation scales, searched "
        "on the model's softmax output vs float over the calibration data (minutes)",
    )  # fmt: skip
    p.add_argument(
        "--weight-budget", type=int, default=None, metavar="BYTES",
        help="mixed precision: per-layer weight bits (2-8) chosen by measured sensitivity "
        "so that codes + codebooks take at most BYTES",
    )  # fmt: skip


def _config_from_args(args):
    from .config import PTQ_PIPELINE, fixed_point, get_config

    cfg = get_config(args.config or "w4-kmeans-a8")
    if args.fixed_point:
        if cfg.activation is None:
            raise TvmqError("--fixed-point needs a config with activations (e.g. w4-kmeans-a8)")
        cfg = fixed_point(cfg)
    act = {}
    for flag, field in (("--activation-levels", "scheme"), ("--input-bits", "input_bits")):
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        if cfg.activation is None:
            raise TvmqError(f"{flag} needs a config with activations (e.g. w4-kmeans-a4)")
        act[field] = value
    if act:  # ActivationConfig checks the values (ConfigError)
        cfg = dataclasses.replace(cfg, activation=dataclasses.replace(cfg.activation, **act))
    changes = {}
    ptq = dict(PTQ_PIPELINE) if getattr(args, "ptq", False) else {}
    if getattr(args, "layerwise", False):
        ptq.update(layerwise=True, sequential=True)
    if getattr(args, "cle", False):
        ptq.update(cle=True, cle_activations=True)
    ptq |= {
        k: v
        for k, v in (
            ("bias_correction", getattr(args, "bias_correction", False)),
            ("weight_budget", getattr(args, "weight_budget", None)),
            ("range_search", getattr(args, "range_search", False)),
        )
        if v
    }
    if ptq:
        changes["ptq"] = dataclasses.replace(cfg.ptq, **ptq)
    if getattr(args, "per_layer", None):
        changes["overrides"] = cfg.overrides + _per_layer(args.per_layer)
    if getattr(args, "skip", None):
        changes["skip"] = cfg.skip + tuple(args.skip)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _quantized(args, default_layout: str | None = "keep"):
    """``(quantized model, input shape, config, label)`` from the model options shared by
    quantize, eval, tune and deploy: MODEL is a float model (quantized now with --config)
    or a ``.tvmq`` artifact (loaded as it is)."""
    from .artifact import is_artifact, load
    from .frontend.load import load_model
    from .quantizer import quantize

    layout = getattr(args, "layout", None)
    if is_artifact(args.model):
        given = [
            opt
            for opt, value in (
                ("--config", args.config),
                ("--fixed-point", args.fixed_point),
                ("--activation-levels", getattr(args, "activation_levels", None)),
                ("--input-bits", getattr(args, "input_bits", None)),
                ("--ptq", getattr(args, "ptq", False)),
                ("--cle", getattr(args, "cle", False)),
                ("--layerwise", getattr(args, "layerwise", False)),
                ("--bias-correction", getattr(args, "bias_correction", False)),
                ("--weight-budget", getattr(args, "weight_budget", None)),
                ("--range-search", getattr(args, "range_search", False)),
                ("--per-layer", getattr(args, "per_layer", None)),
            )
            if value
        ]
        if given:
            raise TvmqError(
                f"{args.model} is a quantized artifact: {', '.join(given)} only work on float "
                "model files (quantize again from the model to change them)"
            )
        qm = load(args.model)
        if layout not in (None, "keep") and layout != (qm.layout or "keep"):
            raise TvmqError(
                f"{args.model} was quantized with layout {qm.layout or 'keep'}; "
                f"--layout {layout} needs a new quantization from the model file"
            )
        shapes = qm.input_shapes
        label = f"{Path(args.model).name}"
    else:
        cfg = _config_from_args(args)
        mod = load_model(args.model)
        shapes = [tuple(int(s) for s in p.ty.shape) for p in mod["main"].params]
        calib = None
        if len(shapes) == 1 and (cfg.activation is not None or cfg.ptq.needs_data):
            source = getattr(args, "calib", None) or getattr(args, "data", None)
            if source is None:
                raise TvmqError(
                    "the config quantizes activations or runs a PTQ step: pass --calib "
                    "fashion-mnist (a data set name) or --calib FILE.npy with a few hundred "
                    "real input samples (not test data)"
                )
            calib = _calib_data(source, shapes[0], args.calib_samples)
        layout = default_layout if layout is None else layout
        from rich.console import Console

        with Console(stderr=True).status(f"quantizing {Path(args.model).name}"):
            qm = quantize(mod, cfg, calib=calib, layout=None if layout == "keep" else layout)
        label = f"{Path(args.model).name} ({args.config or 'w4-kmeans-a8'})"
    if len(shapes) != 1:
        raise TvmqError(f"{args.command} supports single-input models, this one has {len(shapes)}")
    return qm, shapes[0], qm.config, label


def _cmd_quantize(args) -> int:
    if args.calib_samples < 1:
        raise TvmqError("--calib-samples must be at least 1")
    from .artifact import is_artifact

    if is_artifact(args.model):
        raise TvmqError(f"{args.model} is already a quantized artifact; give a float model")
    qm, shape, _, label = _quantized(args)
    out = qm.save(args.output, source=args.model)
    rep = qm.report()
    info = {
        "artifact": str(out),
        "bytes": out.stat().st_size,
        "input_shape": list(shape),
        **{k: rep[k] for k in ("float_weight_bytes", "quant_weight_bytes", "compression")},
        "layers": rep["layers"],
        "config": rep["config"],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{label} -> {out}")
    for col in ("layer", "kind", "scheme", "bits", "weight SQNR", "bytes"):
        table.add_column(col, justify="left" if col in ("layer", "kind", "scheme") else "right")
    for r in qm.layers:
        db = "-" if r.sqnr_db is None else f"{r.sqnr_db:.1f} dB"
        table.add_row(
            r.name, r.kind, r.scheme or "float", str(r.bits or 32), db, f"{r.quant_bytes:,}"
        )
    console = Console()
    console.print(table)
    console.print(
        f"weights {rep['float_weight_bytes'] / 1024:.1f} KiB float -> "
        f"{rep['quant_weight_bytes'] / 1024:.1f} KiB ({rep['compression']:.1f}x); "
        f"next: tvmq eval {out} / tvmq deploy {out} / tvmq report {out}"
    )
    return EXIT_OK


def _cmd_deploy(args) -> int:
    import tempfile

    import numpy as np

    from .backend.aot import generate_aot
    from .micro import Session, boards

    known = boards()
    platform = args.platform or (known[args.board]["platform"] if args.board else "qemu")
    board = (
        args.board or {"host": "host", "qemu": "mps2-an386", "zephyr": "qemu_cortex_m3"}[platform]
    )
    if known[board]["platform"] != platform:
        raise TvmqError(f"board {board} is a {known[board]['platform']} board, not {platform}")
    args.board = board
    qm, shape, cfg, label = _quantized(args, default_layout="NHWC")
    fused = qm.fused()
    if args.tuning is not None:
        from .tune import apply_to_module

        # the QEMU board whose core the records were measured on
        qemu_board = {"host": "mps2-an386", "qemu_cortex_m3": "mps2-an385",
                      "nucleo_l4r5zi": "mps2-an386"}.get(board, board)  # fmt: skip
        fused = apply_to_module(fused, args.tuning, f"qemu:{qemu_board}")
    aot = generate_aot(fused)
    if platform == "zephyr":
        return _deploy_zephyr(args, aot, label)
    xs, labels = _deploy_data(args.data, shape, args.samples, "test", seed=2)
    project = args.project_dir or Path(tempfile.mkdtemp(prefix="tvmq-deploy-")) / "project"
    outs, counts = [], []
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"building and starting {args.board}", total=len(xs))
        with Session(aot, board=args.board, project_dir=project, timeout=args.timeout) as s:
            bar.update(task, description=f"{len(xs)} samples on {args.board}")
            for x in xs:
                y, n = s.run(x)
                outs.append(y)
                counts.append(n)
                bar.advance(task)
            sizes = s.build_info.get("sizes", {})
    outs = np.stack(outs)
    host = np.stack([qm.build().run(x) for x in xs])
    agree = float(
        np.mean(outs.reshape(len(xs), -1).argmax(1) == host.reshape(len(xs), -1).argmax(1))
    )
    report = {
        "model": str(args.model),
        "board": args.board,
        "config": cfg.to_dict(),
        "samples": len(xs),
        "top1_agreement_with_host": agree,
        "max_abs_diff_vs_host": float(np.abs(outs - host).max()),
        "accuracy": None
        if labels is None
        else 100.0 * float(np.mean(outs.reshape(len(xs), -1).argmax(1) == labels)),
        "instructions_median": int(np.median(counts)),
        "const_bytes": aot.const_bytes,
        "arena_bytes": aot.arena_bytes,
        "flash_bytes": sizes["text"] + sizes["data"] if sizes else None,
        "ram_bytes": sizes["data"] + sizes["bss"] if sizes else None,
        "project_dir": str(project),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{label} on {args.board}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if report["accuracy"] is not None:
        table.add_row(
            f"accuracy on {len(xs)} {args.data} test samples", f"{report['accuracy']:.1f} %"
        )
    table.add_row("top-1 agreement with the host TVM build", f"{agree * 100:.1f} %")
    table.add_row("max |device - host| output difference", f"{report['max_abs_diff_vs_host']:.2e}")
    table.add_row("weights + tables (const)", f"{aot.const_bytes / 1024:.1f} KiB")
    table.add_row("activation arena", f"{aot.arena_bytes / 1024:.1f} KiB")
    if report["flash_bytes"] is not None:
        table.add_row(
            "flash (text + data of the binary)", f"{report['flash_bytes'] / 1024:.1f} KiB"
        )
        table.add_row(
            "static RAM (data + bss, arena included)", f"{report['ram_bytes'] / 1024:.1f} KiB"
        )
    if args.board != "host":
        table.add_row("instructions per inference (median)", f"{report['instructions_median']:,}")
    table.add_row("project", str(project))
    Console().print(table)
    return EXIT_OK


def _deploy_zephyr(args, aot, label: str) -> int:
    """Generate the Zephyr application; build (and flash) it where Zephyr is installed."""
    import os
    import tempfile

    from .micro import ProjectAPIClient, generate_project

    project = args.project_dir or Path(tempfile.mkdtemp(prefix="tvmq-zephyr-")) / "project"
    generate_project(aot, args.board, project, timeout=args.timeout)
    report = {
        "model": str(args.model), "board": args.board, "platform": "zephyr",
        "project_dir": str(project), "const_bytes": aot.const_bytes,
        "arena_bytes": aot.arena_bytes, "built": False, "flashed": False,
    }  # fmt: skip
    if os.environ.get("ZEPHYR_BASE"):
        api = ProjectAPIClient(project, timeout=max(args.timeout, 600))
        try:
            info = api.call("build", options={"board": args.board}) or {}
            report["built"], report["sizes"] = True, info.get("sizes")
            if args.flash:
                api.call("flash", options={"board": args.board})
                report["flashed"] = True
        finally:
            api.close()
    else:
        report["next_step"] = (
            f"ZEPHYR_BASE is not set: install Zephyr and its SDK (west), then "
            f"`west build -b {args.board} {project}` and `west flash`"
        )
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"Zephyr project for {label} on {args.board}: {project}")
    print(f"  weights + tables {aot.const_bytes / 1024:.1f} KiB, arena "
          f"{aot.arena_bytes / 1024:.1f} KiB")  # fmt: skip
    print(f"  built: {report['built']}, flashed: {report['flashed']}")
    if "next_step" in report:
        print(f"  next: {report['next_step']}")
    return EXIT_OK


def _cmd_tune(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from .tune import kernel_times, tune

    if args.trials < 1:
        raise TvmqError("--trials must be at least 1")
    from .tune import resolve_target

    resolve_target(args.target)  # a bad target or unknown board fails before any work
    qm, _, _, label = _quantized(args, default_layout="NHWC" if args.target != "llvm" else "keep")
    console = Console(stderr=args.json)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("tuning LUT kernels", total=args.trials)

        def progress(name, trials, best):
            best_txt = "-" if best is None else f"{best * 1e6:.1f} us"
            bar.update(task, advance=1, description=f"{name}: best {best_txt}")

        res = tune(
            qm, args.db, trials=args.trials, trials_per_task=args.per_task,
            time_limit_s=args.time_limit, progress=progress, kernels=args.kernel,
            target=args.target,
        )  # fmt: skip
    names = sorted(res.tasks)
    if args.target == "llvm":
        base = kernel_times(qm, names=names)
        ours = kernel_times(qm, names=names, schedule=True)
        tuned = kernel_times(qm, names=names, tuning=args.db)
        unit, scale = "us", 1e6
    else:  # instructions per call on the emulated board
        from .backend.mcu_measure import measure_kernels
        from .backend.schedule import schedule_mcu
        from .tune import apply_to_module

        board_name = args.target.split(":", 1)[1]
        fused = qm.fused()
        # TE's default schedule of some integer kernels has no plain-C form: "-"
        base = measure_kernels(fused, board_name, names, skip_unprintable=True)
        ours = measure_kernels(schedule_mcu(fused), board_name, names)
        tuned = measure_kernels(apply_to_module(fused, args.db, args.target), board_name, names)
        unit, scale = "instr", 1
    rows = [
        {"kernel": n, "untuned": base[n], "tvmq_schedule": ours[n], "tuned": tuned[n],
         "unit": "s" if unit == "us" else "instructions",
         "speedup": None if base[n] is None else base[n] / tuned[n],
         "speedup_vs_tvmq_schedule": ours[n] / tuned[n],
         "trials": res.tasks[n].trials, "previous_records": res.tasks[n].previous}
        for n in names
    ]  # fmt: skip
    report = {**res.to_dict(), "kernels": rows}
    if args.plot:
        _plot_tuning(res, args.plot)
        report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    table = Table(title=f"tuning {label} -> {args.db}")
    for col in ("kernel", "untuned", "tvmq schedule", "tuned", "speedup", "trials"):
        table.add_column(col, justify="left" if col == "kernel" else "right")

    def fmt(v):
        if v is None:
            return "-"
        return f"{v * scale:.1f} us" if unit == "us" else f"{v:,} instr"

    for r in rows:
        speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        table.add_row(
            r["kernel"], fmt(r["untuned"]), fmt(r["tvmq_schedule"]), fmt(r["tuned"]),
            speedup, f"{r['trials']} (+{r['previous_records']} before)",
        )  # fmt: skip
    console.print(table)
    if res.interrupted:
        console.print("[yellow]stopped early; everything measured is in the database[/]")
    how = (
        f"QuantizedModel.build(tuning={str(args.db)!r})"
        if args.target == "llvm"
        else f"tvmq deploy ... --board {args.target[5:]} --tuning {args.db}"
    )
    console.print(f"{res.seconds:.0f} s; apply with {how}")
    return EXIT_OK


def _plot_tuning(res, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from .io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, t in sorted(res.tasks.items()):
        if t.history:
            ax.plot(range(1, len(t.history) + 1), [h * 1e6 for h in t.history], label=name)
    ax.set_xlabel("trials")
    ax.set_ylabel("best time so far (us)")
    ax.set_title("MetaSchedule tuning of the LUT kernels")
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _cmd_eval(args) -> int:
    import numpy as np
    from rich.console import Console
    from rich.progress import Progress

    from .evaluate import standard_error

    if args.samples < 1:
        raise TvmqError("--samples must be at least 1")
    qm, shape, cfg, label = _quantized(args)
    xs, labels = _deploy_data(args.data, shape, args.samples, "test", seed=2)
    console = Console(stderr=args.json)
    correct = {"float": 0, "quantized": 0}
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"{args.samples} test samples (float and quantized)", total=len(xs))
        qm.build()
        for x, y in zip(xs, labels):
            correct["float"] += int(np.asarray(qm.run_float(x)).reshape(-1).argmax() == y)
            correct["quantized"] += int(np.asarray(qm.run(x)).reshape(-1).argmax() == y)
            bar.advance(task)
    n = len(xs)
    acc = {k: v / n for k, v in correct.items()}
    report = {
        "model": str(args.model),
        "config": cfg.to_dict(),
        "samples": n,
        "float_accuracy": acc["float"],
        "quantized_accuracy": acc["quantized"],
        "drop_points": 100 * (acc["float"] - acc["quantized"]),
        "stderr_points": 100 * standard_error(acc["quantized"], n),
        "weight_bytes": qm.report()["quant_weight_bytes"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    console.print(
        f"{label} on {n} {args.data} test samples: float "
        f"{100 * acc['float']:.2f} %, quantized {100 * acc['quantized']:.2f} % "
        f"({report['drop_points']:+.2f} points, one standard error "
        f"{report['stderr_points']:.2f}); weights {report['weight_bytes'] / 1024:.1f} KiB"
    )
    return EXIT_OK


def _cmd_report(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from . import report as rp
    from .evaluate import standard_error

    if args.samples < 1:
        raise TvmqError("--samples must be at least 1")
    qm, shape, _, label = _quantized(args)
    console = Console(stderr=True)
    acc = curve = None
    if args.data is not None:
        xs, labels = _deploy_data(args.data, shape, args.samples, "test", seed=2)
        steps = 2 + (2 * len(args.curve_bits) if args.curve_bits else 0)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"accuracy on {len(xs)} {args.data} test samples", total=steps)
            f_acc = rp.accuracy(qm, xs, labels, float_model=True)
            bar.advance(task)
            q_acc = rp.accuracy(qm, xs, labels)
            bar.advance(task)
            acc = {
                "data": args.data, "samples": len(xs), "float": f_acc, "quantized": q_acc,
                "stderr_points": 100 * standard_error(q_acc, len(xs)),
            }  # fmt: skip
            if args.curve_bits:
                calib = _calib_data(args.data, shape, args.calib_samples)
                curve = rp.accuracy_curve(
                    qm, xs, labels, calib, bits=tuple(args.curve_bits),
                    progress=lambda: bar.advance(task),
                )  # fmt: skip
    elif args.curve_bits:
        raise TvmqError("--curve-bits needs labelled test data: add --data fashion-mnist")
    with console.status("drawing the report"):
        path = rp.write_report(
            qm, args.output, title=f"tvmq report: {label}", memory=not args.no_memory,
            acc=acc, curve=curve,
        )  # fmt: skip
    if args.json:
        print(json.dumps({"report": str(path), "accuracy": acc, "curve": curve}, indent=2))
    else:
        print(f"report: {path}")
    return EXIT_OK


def _cmd_bench(args) -> int:
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    if not script.is_file():
        raise TvmqError(
            "tvmq bench runs the benchmark suite of a source checkout (benchmarks/run.py), "
            "which this installation does not have"
        )
    sys.argv = ["tvmq bench", *args.bench_args]
    sys.path.insert(0, str(script.parents[1]))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    return EXIT_OK


def _cmd_inspect(args) -> int:
    from .inspection import inspect_model

    info = inspect_model(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{Path(args.model).name}: weight layers")
    for col in ("layer", "kind", "weight", "output", "params", "MACs"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for x in info["layers"]:
        table.add_row(
            x["name"], x["kind"], "x".join(map(str, x["weight_shape"])),
            "x".join(map(str, x["output_shape"])), f"{x['params']:,}", f"{x['macs']:,}",
        )  # fmt: skip
    console = Console()
    console.print(table)
    ins = ", ".join(f"{i['name']} {i['shape']} {i['dtype']}" for i in info["inputs"])
    console.print(f"inputs: {ins}")
    console.print(
        f"{info['params']:,} weights ({info['param_bytes_float32'] / 1024:.1f} KiB float32), "
        f"{info['macs']:,} MACs per inference; largest operator footprint "
        f"{info['peak_op_bytes'] / 1024:.1f} KiB ({info['peak_op']}, inputs + output, float32)"
    )
    return EXIT_OK


def _cmd_demo(args) -> int:
    from . import demo

    return demo.main(["--out", str(args.out)] if args.out else [])


def _model_options(p: argparse.ArgumentParser, calib_samples: int, artifact: bool = True) -> None:
    """The model / config options of the commands that quantize (quantize, deploy, eval,
    tune)."""
    from .config import PRESETS

    p.add_argument(
        "model",
        help="a .onnx or .tflite float model"
        + (", or a .tvmq artifact written by `tvmq quantize`" if artifact else ""),
    )
    p.add_argument(
        "--config", default=None, metavar="PRESET",
        help=f"weight/activation preset (default w4-kmeans-a8): {', '.join(sorted(PRESETS))}",
    )  # fmt: skip
    p.add_argument(
        "--fixed-point", action="store_true",
        help="integer-only epilogues (requantize in fixed point; what MCUs run fastest)",
    )  # fmt: skip
    p.add_argument(
        "--activation-levels", choices=["uniform", "kmeans"], default=None,
        help="activation levels below 8 bits: uniform (default) or kmeans (Lloyd-Max levels "
        "on an 8-bit grid, placed where the calibration values are; same int8 storage)",
    )  # fmt: skip
    p.add_argument(
        "--input-bits", type=int, default=None, metavar="N",
        help="bits (2-8) of the layers that read the model input, when the other "
        "activations are narrower (8: pixels / sensor samples are 8-bit data already)",
    )  # fmt: skip
    p.add_argument(
        "--calib-samples", type=int, default=calib_samples,
        help=f"calibration samples drawn from the train split (default {calib_samples})",
    )  # fmt: skip


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
        "each scheme and bit width; print model weight SQNR and bits per weight (packed codes "
        "plus codebooks: a scale or IS/SC per group for uniform, NF, PoT and TFX, float32 "
        "level tables for k-means and quantile).",
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
        "quantize",
        help="quantize a float model and write a .tvmq artifact",
        description="Import MODEL, quantize its conv / depthwise / dense weights to packed "
        "codes + codebooks with --config (calibrating activations on --calib data), and "
        "write everything the later steps need (IR, packed weights, codebooks, config, a "
        "manifest with versions and hashes) to one .tvmq file, atomically.",
        epilog="example: tvmq quantize models/fmnist_convnet.onnx --config w4-kmeans-a8 "
        "--fixed-point --calib fashion-mnist --layout NHWC --per-layer 'layer0_*:bits=8' "
        "-o convnet.tvmq",
    )
    _model_options(p, calib_samples=256, artifact=False)
    p.add_argument("-o", "--output", type=Path, required=True, help="the .tvmq file to write")
    p.add_argument(
        "--calib", default=None, metavar="DATA",
        help="calibration data: fashion-mnist, watch-imu, digits, random, or a .npy file of "
        "(N, *input shape) samples (needed by configs that quantize activations)",
    )  # fmt: skip
    p.add_argument(
        "--per-layer", action="append", default=None, metavar="PATTERN:KEY=VALUE[,...]",
        help="scheme options for layers whose name matches PATTERN (fnmatch on layer<i>_<kind>"
        " as `tvmq inspect` numbers them), e.g. 'layer0_*:bits=8' or '*dense:scheme=uniform'; "
        "repeatable, later wins",
    )  # fmt: skip
    p.add_argument(
        "--skip", action="append", default=None, metavar="PATTERN",
        help="leave matching layers in float (a pattern, or first / last); repeatable",
    )  # fmt: skip
    _ptq_options(p)
    p.add_argument(
        "--layout", choices=["NHWC", "NCHW", "keep"], default="keep",
        help="convert 2-D convolutions to this layout first (NHWC for Cortex-M deployment)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser(
        "deploy",
        help="quantize a model, run it on the host or an emulated Cortex-M, report",
        description="Quantize MODEL, generate plain C with a static arena, build it through "
        "the Project API for BOARD (host or a QEMU Cortex-M), run real or random samples on "
        "it and report accuracy / agreement with the host TVM build, memory and "
        "instructions per inference.",
        epilog="example: tvmq deploy mlp.onnx --board mps2-an386 --config w4-kmeans-a8 "
        "--fixed-point --data fashion-mnist --samples 50",
    )
    _model_options(p, calib_samples=128)
    p.add_argument(
        "--platform", choices=["host", "qemu", "zephyr"], default=None,
        help="host process, QEMU Cortex-M, or a generated Zephyr project (default: the "
        "board's platform, or qemu)",
    )  # fmt: skip
    p.add_argument(
        "--board", default=None,
        choices=["host", "mps2-an385", "mps2-an386", "mps2-an500", "mps3-an547",
                 "qemu_cortex_m3", "nucleo_l4r5zi"],
        help="default: mps2-an386 on qemu, qemu_cortex_m3 on zephyr",
    )  # fmt: skip
    p.add_argument(
        "--tuning", type=Path, default=None, metavar="DIR",
        help="apply a `tvmq tune --target qemu:BOARD` database: tuned kernels in the C",
    )  # fmt: skip
    p.add_argument(
        "--flash", action="store_true",
        help="zephyr: also flash the built project to the attached board (west flash)",
    )  # fmt: skip
    p.add_argument(
        "--data",
        choices=[*DATASETS, "random"],
        default="random",
        help="samples to run (and calibrate on); random gives agreement only",
    )
    p.add_argument("--samples", type=int, default=20)
    p.add_argument(
        "--layout", choices=["NHWC", "NCHW", "keep"], default=None,
        help="2-D convolution layout to compile (default NHWC: channels-last is fastest on "
        "Cortex-M; an artifact keeps the layout it was quantized with)",
    )  # fmt: skip
    p.add_argument("--project-dir", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per step")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_deploy)

    p = sub.add_parser(
        "eval",
        help="top-1 accuracy of a model, float and quantized, on real test data",
        description="Quantize MODEL with --config (calibrating on the train split), build "
        "the LUT kernels for the host and measure top-1 accuracy of the float and the "
        "quantized model on a seeded random draw of --samples test images.",
        epilog="example: tvmq eval models/fmnist_convnet.onnx --config w4-kmeans-a8 "
        "--data fashion-mnist --samples 1000 --layerwise",
    )
    _model_options(p, calib_samples=256)
    _ptq_options(p)
    p.add_argument("--data", choices=list(DATASETS), default="fashion-mnist")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "inspect",
        help="layers, shapes, parameters, MACs and peak activation bytes of a model",
        description="Import MODEL (ONNX, TFLite) and list its conv / depthwise / dense "
        "layers with weight and output shapes, parameters and MACs, plus the largest "
        "input+output footprint of any operator (a lower bound for the activation arena).",
        epilog="example: tvmq inspect models/fmnist_convnet.onnx --json",
    )
    p.add_argument("model", help="a .onnx or .tflite model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser(
        "tune",
        help="autotune the LUT kernels of a quantized model (MetaSchedule, XGBoost)",
        description="Quantize MODEL, extract its fused LUT kernels as MetaSchedule tasks, "
        "search schedules with the XGBoost cost model on the host (llvm, one core), keep "
        "every measurement in the JSON database in --db (re-runs continue from it), and "
        "print per kernel: TE's default schedule, tvmq's schedule, the tuned one.",
        epilog="example: tvmq tune model.onnx --config w4-kmeans-a8 --data fashion-mnist "
        "--trials 64 --db tuning/ --plot tuning.png",
    )
    _model_options(p, calib_samples=128)
    p.add_argument("--data", choices=[*DATASETS, "random"], default="random",
                   help="calibration samples")  # fmt: skip
    p.add_argument("--db", type=Path, required=True, help="tuning work directory (database)")
    p.add_argument(
        "--target", default="llvm", metavar="llvm|qemu:BOARD",
        help="measure candidates on the host (llvm, one core) or as instructions on an "
        "emulated Cortex-M (e.g. qemu:mps2-an386; deploy with --tuning DIR)",
    )  # fmt: skip
    p.add_argument("--trials", type=int, default=64, help="measurements over all kernels")
    p.add_argument("--per-task", type=int, default=None, help="measurements per kernel")
    p.add_argument("--time-limit", type=float, default=None, help="seconds; stop after")
    p.add_argument(
        "--kernel", action="append", default=None, metavar="NAME",
        help="tune only this kernel (repeatable; names as the table lists them)",
    )  # fmt: skip
    p.add_argument("--plot", type=Path, default=None, help="PNG of best time vs trials")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser(
        "report",
        help="a Markdown report with plots: levels on weight histograms, SQNR, memory map",
        description="Write DIR/report.md with PNG plots for a quantized artifact (or a model "
        "quantized now with --config): per-layer table and SQNR / bits-per-weight chart, "
        "each layer's weight histogram with its quantization levels, the generated C's "
        "memory map (flash by kernel, arena over time), and with --data the accuracy on "
        "real test samples and, with --curve-bits, accuracy vs weight bits against uniform.",
        epilog="example: tvmq report convnet.tvmq -o report/ --data fashion-mnist "
        "--samples 500 --curve-bits 2 3 4 8",
    )
    _model_options(p, calib_samples=128)
    p.add_argument("-o", "--output", type=Path, required=True, help="report directory")
    p.add_argument("--data", choices=list(DATASETS), default=None, help="labelled test data")
    p.add_argument("--samples", type=int, default=500, help="test samples for accuracy")
    p.add_argument(
        "--curve-bits", type=int, nargs="+", default=None, metavar="BITS",
        help="also re-quantize at these weight widths (scheme and uniform) for an accuracy "
        "curve (slow on big models: one quantization per point)",
    )  # fmt: skip
    p.add_argument("--no-memory", action="store_true", help="skip the memory map (C codegen)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "bench",
        help="the benchmark suite (tables, JSON and plots; what `make bench` runs)",
        description="Run benchmarks/run.py of this source checkout; arguments after `bench` "
        "go to it (--fast, --only schemes|device|accuracy, --out DIR).",
        epilog="example: tvmq bench --fast --only schemes",
        add_help=False,
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench)

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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # everything after `bench` is the suite's (argparse would
        # take a leading --help or --fast for itself)
        args = argparse.Namespace(func=_cmd_bench, bench_args=argv[1:])
    else:
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
