"""Top-1 accuracy of the shipped models under post-training quantization, on real test data.

For each model of :mod:`tvmq.zoo`: the float model and every (scheme, weight bits,
activation bits, PTQ on/off) of the grid, each built by TVM with tvmq's LUT kernels and
run on the test split (the full one unless ``fast``). Calibration uses 256 training
samples, never test data. "PTQ" is the pipeline in seed 004's order: cross-layer
equalization (weights, then activation-aware where it pays), MSE-initialized quantizers
(always on), layer-wise codebook fitting
(codes with error feedback, then levels; k-means and quantile), fitted again layer after
layer on the quantized network's inputs, and bias correction on the quantized network's
outputs (:data:`tvmq.config.PTQ_PIPELINE`). Uniform rows are the baseline through the
same pipeline with as many levels as the codebooks (2^b). Each row carries its weight size
(codes + codebooks, as stored), the effective bits per weight and one binomial standard
error. :func:`goals` measures issue 7's goal rows on the full test sets.

Also: a Table-2-style comparison with TENT (seed 002) on the Fashion-MNIST ConvNet (TFX vs
Qm.n fixed point, per-tensor, W = A bits, at 8/7/6/5 bits, with our best scheme beside
them), and one mixed-precision row per model (weight bits chosen under the byte budget
of the uniform 3-bit model).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from tvmq import zoo
from tvmq.config import PTQ_PIPELINE, QuantConfig
from tvmq.evaluate import accuracy, calibration_set, load_split, standard_error
from tvmq.frontend.load import load_model
from tvmq.io import atomic_write_bytes, atomic_write_json
from tvmq.quantizer import quantize

SCHEMES = ("uniform", "quantile", "kmeans", "tfx", "pot", "nf")
W_BITS = (8, 6, 5, 4, 3, 2)
PTQ_ON = PTQ_PIPELINE
# (scheme, weight bits, activation bits, PTQ, granularity)
GRID = [
    (s, wb, ab, p, "channel")
    for s in SCHEMES
    for wb in W_BITS
    for ab in sorted({8, wb}, reverse=True)
    for p in (False, True)
]
GRID_FAST = [
    (s, wb, ab, p, "channel")
    for wb, ab in ((4, 4), (3, 3), (2, 8), (2, 2))
    for s in ("uniform", "kmeans")
    for p in (False, True)
]
TENT_MODEL = "fmnist_convnet"
TENT_BITS = (8, 7, 6, 5)
# seed 002, Table 2, Fashion-MNIST: bits -> (TFX, fixed point) top-1 %
TENT_TABLE2 = {8: (92.59, 89.59), 7: (92.47, 88.63), 6: (92.14, 85.31), 5: (89.35, 83.46)}
TENT_ROWS = [(s, b, b, False, "tensor") for b in TENT_BITS for s in ("tfx", "fixed")] + [
    ("kmeans", b, b, True, "channel") for b in TENT_BITS
]
TEST_FAST = 2000


def _grid(fast: bool):
    return GRID_FAST if fast else GRID


def total_rows(fast: bool, models=None) -> int:
    names = list(models or zoo.available())
    tent = len(TENT_ROWS) if TENT_MODEL in names else 0
    return len(names) * (len(_grid(fast)) + 2) + tent


def _row(mod, spec, calib, x, y, float_acc, budget=None, input_bits=None, levels=None,
         range_search=False) -> dict:  # fmt: skip
    scheme, wb, ab, ptq, gran = spec
    row = {"scheme": scheme, "w_bits": wb, "a_bits": ab, "ptq": ptq, "granularity": gran}
    opts = dict(PTQ_ON) if ptq else {}
    if range_search:
        opts["range_search"] = row["range_search"] = True
    if budget is not None:
        opts["weight_budget"] = budget
        row["weight_budget"] = budget
    act = None
    if ab:
        act = {"bits": ab}
        if input_bits is not None:
            act["input_bits"] = row["input_bits"] = input_bits
        if levels is not None:
            act["scheme"] = row["act_levels"] = levels
    cfg = QuantConfig(
        weight={"scheme": scheme, "bits": wb}, granularity=gran, activation=act, ptq=opts
    )
    t0 = time.time()
    try:
        needs = cfg.activation is not None or cfg.ptq.needs_data
        qm = quantize(mod, cfg, calib=calib if needs else None).build()
        acc = accuracy(qm.run, x, y)
    except Exception as exc:  # a scheme that cannot represent a layer: say so
        return {**row, "error": f"{type(exc).__name__}: {exc}"}
    rep = qm.report()
    n_w = sum(int(np.prod(r["shape"])) for r in rep["layers"] if r.get("bits")) or None
    q_bytes = sum(r["quant_bytes"] for r in rep["layers"] if r.get("bits"))
    return {
        **row,
        "accuracy": acc,
        "drop_points": 100 * (float_acc - acc),
        "stderr_points": 100 * standard_error(acc, len(y)),
        "weight_bytes": rep["quant_weight_bytes"],
        "bits_per_weight": 8 * q_bytes / n_w if n_w else None,
        "layer_bits": [r.get("bits") for r in rep["layers"]],
        "seconds": round(time.time() - t0, 1),
    }


DRAW_SPEC = ("kmeans", 4, 4, True, "channel")
MIXED_SPEC = ("kmeans", 4, 8, True, "channel")
"""The mixed-precision row: k-means + PTQ, A8, 4 bits where the weight budget allows."""
DRAW_SEEDS = (0, 1, 2)


def calibration_draws(drops: dict) -> dict:
    """Row :data:`DRAW_SPEC` over independent calibration draws: ``drops`` maps each seed
    of :data:`DRAW_SEEDS` to its points lost (None: an error); how much of a difference
    between rows is the calibration set's luck."""
    drops = [drops.get(seed) for seed in DRAW_SEEDS]
    ok = [d for d in drops if d is not None]
    return {
        "spec": list(DRAW_SPEC),
        "seeds": list(DRAW_SEEDS),
        "drop_points": drops,
        "mean": float(np.mean(ok)) if ok else None,
        "std": float(np.std(ok, ddof=1)) if len(ok) > 1 else None,
    }


def _spec_of(row: dict) -> tuple:
    return (row["scheme"], row["w_bits"], row["a_bits"], row["ptq"], row["granularity"])


def _model_data(name: str, fast: bool):
    """``(zoo info, test inputs, labels, 256 calibration samples, Relax module)`` of a
    shipped model (``fast``: the first :data:`TEST_FAST` test samples)."""
    meta = zoo.info(name)
    x, y = load_split(meta["dataset"], "test")
    if fast:
        x, y = x[:TEST_FAST], y[:TEST_FAST]
    return meta, x, y, calibration_set(meta["dataset"], 256), load_model(zoo.model_path(name))


_WORKER: dict = {}
"""A grid worker process's model, data and float accuracy (set by :func:`_worker_init`)."""
ONE_THREAD = {v: "1" for v in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
"""The environment of a grid worker: one thread each, ``jobs`` workers share the cores."""


def _worker_init(name: str, fast: bool, float_acc: float) -> None:
    # an initializer that raises makes the pool start workers forever: keep the error and
    # raise it from the first task instead, so it reaches the parent
    try:
        _WORKER["data"] = _model_data(name, fast)
    except Exception as exc:
        _WORKER["error"] = f"grid worker could not load {name}: {type(exc).__name__}: {exc}"
        return
    _WORKER["float_acc"] = float_acc


def _task_row(data, float_acc: float, task: tuple) -> dict:
    """:func:`_row` of a ``(spec, options)`` task: ``options`` are ``_row``'s keywords,
    plus ``calib_seed`` for another calibration draw than the model's default (seed 0)."""
    meta, x, y, calib, mod = data
    spec, opts = task
    opts = dict(opts)
    seed = opts.pop("calib_seed", None)
    if seed is not None:
        calib = calibration_set(meta["dataset"], 256, seed=seed)
    return _row(mod, tuple(spec), calib, x, y, float_acc, **opts)


def _worker_row(item: tuple) -> tuple[int, dict]:
    w = _WORKER
    if "error" in w:
        raise RuntimeError(w["error"])
    i, task = item
    return i, _task_row(w["data"], w["float_acc"], task)


def measure_rows(name: str, fast: bool, tasks: list, float_acc: float, jobs: int = 1,
                 data=None):  # fmt: skip
    """``(index, row)`` of each ``(spec, options)`` task of model ``name`` (see
    :func:`_task_row`), as they finish: in this process (``jobs`` 1; ``data``: what
    :func:`_model_data` gives, when already loaded), else in ``jobs`` spawned one-thread
    processes, each loading the model and data once. Rows are independent and
    deterministic (the calibration draw is in the task), so any ``jobs`` gives the same
    rows. A script calling this with ``jobs > 1`` needs its ``__main__`` guard."""
    if jobs <= 1 or len(tasks) <= 1:
        data = data if data is not None else _model_data(name, fast)
        for i, task in enumerate(tasks):
            yield i, _task_row(data, float_acc, task)
        return
    saved = {k: os.environ.get(k) for k in ONE_THREAD}
    os.environ.update(ONE_THREAD)  # inherited by the spawned workers
    try:
        ctx = multiprocessing.get_context("spawn")
        pool = ctx.Pool(min(jobs, len(tasks)), _worker_init, (name, fast, float_acc))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with pool:
        yield from pool.imap_unordered(_worker_row, list(enumerate(tasks)))


def _resumed(out_dir: Path, fast: bool) -> tuple[dict, dict]:
    """``(finished models, {model: {spec: row}})`` of the ``accuracy.partial.json`` in
    ``out_dir`` when it was written with the same ``fast`` and PTQ settings, else empty."""
    path = out_dir / "accuracy.partial.json"
    if not path.exists():
        return {}, {}
    saved = json.loads(path.read_text())
    if saved.get("fast") != fast or saved.get("ptq") != PTQ_ON:
        return {}, {}
    part = saved.get("partial") or {}
    rows = {part["model"]: {_spec_of(r): r for r in part.get("rows", [])}} if part else {}
    return saved.get("models", {}), rows


def run(out_dir: Path, fast: bool = False, progress=None, models=None, resume=False,
        jobs: int = 1) -> dict:  # fmt: skip
    """The grid for ``models`` (default: every shipped model); ``resume``: keep the models
    and rows of a stopped run's ``accuracy.partial.json`` (same ``fast`` and PTQ) and
    measure only the rest; ``jobs``: rows in that many one-thread processes
    (:func:`measure_rows`): the grid and TENT rows, then the mixed row and the calibration
    draws (they need the grid's rows). TENT's k-means rows that are grid rows (same spec)
    are taken from the grid."""
    results: dict = {"models": {}, "fast": fast, "ptq": PTQ_ON}
    out_dir.mkdir(parents=True, exist_ok=True)
    finished, measured = _resumed(out_dir, fast) if resume else ({}, {})

    def save_partial(name, rows):  # an hours-long grid: keep what is measured if stopped
        atomic_write_json(out_dir / "accuracy.partial.json",
                          {**results, "partial": {"model": name, "rows": rows}})  # fmt: skip

    def tick(n: int = 1):
        for _ in range(n if progress is not None else 0):
            progress()

    for name in models or zoo.available():
        if name in finished:
            results["models"][name] = finished[name]
            tick(total_rows(fast, [name]))
            continue
        data = _model_data(name, fast)
        meta, x, y, _calib, mod = data
        t0 = time.time()
        first = quantize(mod, QuantConfig(weight={"scheme": "uniform", "bits": 8}))
        float_acc = accuracy(first.run_float, x, y)
        grid = list(_grid(fast))
        extra = [sp for sp in TENT_ROWS if sp not in grid] if name == TENT_MODEL else []
        got = dict(measured.get(name, {}))
        todo = [sp for sp in grid + extra if sp not in got]
        tick(total_rows(fast, [name]) - 2 - len(todo))  # kept or shared rows
        tasks = [(sp, {}) for sp in todo]
        for i, row in measure_rows(name, fast, tasks, float_acc, jobs, data):
            got[todo[i]] = row
            tick()
            save_partial(name, [got[sp] for sp in grid + extra if sp in got])
        rows = [got[sp] for sp in grid]
        # mixed precision: the byte budget of the uniform 3-bit model (the one with A8)
        ref = next((r for r in rows if _spec_of(r) == ("uniform", 3, 3, False, "channel")
                    and "error" not in r), None)  # fmt: skip
        budget = ref["weight_bytes"] if ref else None
        # then the mixed row and the calibration draws (seed 0's is the grid's), together
        drops = {0: got[DRAW_SPEC].get("drop_points")} if DRAW_SPEC in got else {}
        tasks = [(MIXED_SPEC, {"budget": budget})] if budget else []
        tasks += [(DRAW_SPEC, {"calib_seed": sd}) for sd in DRAW_SEEDS if sd not in drops]
        n_draws = len(tasks) - bool(budget)
        mixed = None
        tick((not budget) + (not n_draws))  # nothing to measure for these
        for i, row in measure_rows(name, fast, tasks, float_acc, jobs, data):
            if "budget" in tasks[i][1]:
                mixed = {**row, "a_bits": 8}
                tick()
            else:
                drops[tasks[i][1]["calib_seed"]] = row.get("drop_points")
                n_draws -= 1
                if n_draws == 0:
                    tick()
        tent = [got[sp] for sp in TENT_ROWS] if name == TENT_MODEL else []
        draws = calibration_draws(drops)
        results["models"][name] = {
            "dataset": meta["dataset"],
            "test_samples": len(y),
            "float_accuracy": float_acc,
            "float_accuracy_recorded": meta["float_accuracy"],
            "float_weight_bytes": first.report()["float_weight_bytes"],
            "seconds": round(time.time() - t0),
            "rows": rows,
            "mixed": mixed,
            "tent": tent,
            "draws": draws,
        }
        plot(results["models"][name], name, out_dir / f"accuracy_{name}.png")
    (out_dir / "accuracy.partial.json").unlink(missing_ok=True)
    return results


# issue 7's goals: model -> ((weight bits, activation bits, most points lost), ...)
GOALS = {
    "fmnist_convnet": ((4, 4, 0.2), (3, 3, 0.5), (2, 8, 0.3), (2, 2, 1.5)),
    "fmnist_res8": ((4, 4, 0.3), (3, 3, 1.0), (2, 2, 5.0)),
    "fmnist_dscnn": ((4, 4, 0.5), (3, 3, 2.0)),
    "imu_cnn1d": ((2, 2, 1.0),),
}


# name -> (input bits, activation levels, range search) of the goal rows whose activations
# are below 8 bits (the A8 goal is measured once, as "input-a")
GOAL_VARIANTS = {
    "input-a": (None, "uniform", False),
    "input-8": (8, "uniform", False),
    "input-8-kmeans": (8, "kmeans", False),
    "input-8-kmeans-search": (8, "kmeans", True),
}


def _variants(a_bits: int, names=None) -> dict:
    """The variants of ``names`` (default all) a goal at ``a_bits`` is measured with: an
    A8 goal only as ``input-a``."""
    return {
        k: v
        for k, v in GOAL_VARIANTS.items()
        if (names is None or k in names) and (a_bits < 8 or k == "input-a")
    }


def goal_rows(models=None, variants=None) -> int:
    """Rows :func:`goals` measures: k-means + PTQ per goal, and where the activations are
    narrower than 8 bits each of ``variants`` (names of :data:`GOAL_VARIANTS`; default
    all)."""
    names = [n for n in (models or zoo.available()) if n in GOALS]
    return sum(len(_variants(ab, variants)) for n in names for _, ab, _ in GOALS[n])


def goals(progress=None, models=None, variants=None, jobs: int = 1) -> dict:
    """Per-channel k-means + the whole PTQ pipeline at each goal of :data:`GOALS`, on the
    *full* test set (the goals are stated for it): as the grid measures it (every
    activation, the model input included, at A bits) and with the layer that reads the
    model input at 8 bits (``ActivationConfig(input_bits=8)``: the data are 8-bit
    pixels or sensor samples already). ``jobs``: rows in that many processes, as in
    :func:`run`."""
    out: dict = {"ptq": PTQ_ON, "models": {}}
    for name in models or zoo.available():
        if name not in GOALS:
            continue
        data = _model_data(name, fast=False)
        _, x, y, _calib, mod = data
        float_acc = accuracy(quantize(mod, QuantConfig(weight="uniform")).run_float, x, y)
        tasks, most = [], []
        for wb, ab, points in GOALS[name]:
            for input_bits, levels, search in _variants(ab, variants).values():
                opts = {"input_bits": input_bits, "levels": levels, "range_search": search}
                tasks.append((("kmeans", wb, ab, True, "channel"), opts))
                most.append(points)
        rows: list = [None] * len(tasks)
        for i, r in measure_rows(name, False, tasks, float_acc, jobs, data):
            r["goal_points"] = most[i]
            r["met"] = r.get("drop_points") is not None and r["drop_points"] <= most[i]
            rows[i] = r
            if progress is not None:
                progress()
        out["models"][name] = {"test_samples": len(y), "float_accuracy": float_acc,
                               "rows": rows}  # fmt: skip
    return out


def goals_markdown(res: dict) -> str:
    lines = [
        "# Accuracy goals (issue 7): per-channel k-means + PTQ, full test sets",
        "",
        f"PTQ = {', '.join(f'{k}={v}' for k, v in res['ptq'].items())}; 256 calibration "
        'samples (train split). "input 8": the layer reading the model input quantizes '
        "it at 8 bits, the others at A bits.",
        "",
        "| model | W/A | input | activation levels | drop (points) | goal | met | bits/weight |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in res["models"].items():
        for r in m["rows"]:
            inp = "8" if r.get("input_bits") else "A"
            inp += f" | {r.get('act_levels', 'uniform')}"
            inp += " + range search" if r.get("range_search") else ""
            if "error" in r:
                lines.append(f"| {name} | {r['w_bits']}/{r['a_bits']} | {inp} | "
                             f"error: {r['error'][:60]} | <= {r['goal_points']} | | |")  # fmt: skip
                continue
            lines.append(
                f"| {name} | {r['w_bits']}/{r['a_bits']} | {inp} | {r['drop_points']:+.2f} ± "
                f"{r['stderr_points']:.2f} | <= {r['goal_points']} | "
                f"{'yes' if r['met'] else 'no'} | {r['bits_per_weight']:.2f} |"
            )
    return "\n".join([*lines, ""])


def plot(m: dict, name: str, path: Path) -> None:
    """Points lost vs weight bits per scheme, at W = A bits and at A8 side by side (PTQ
    solid, without dashed; symmetric-log axis, so both a 0.2-point gap at 4 bits and a
    collapse at 2 bits show)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110, sharey=True)
    colors = dict(zip(SCHEMES, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    panels = (("W = A bits", lambda r: r["a_bits"] == r["w_bits"]),
              ("A = 8 bits", lambda r: r["a_bits"] == 8))  # fmt: skip
    for ax, (title, keep) in zip(axes, panels, strict=True):
        for scheme in SCHEMES:
            for ptq, style in ((True, "-"), (False, "--")):
                pts = sorted(
                    (r["w_bits"], r["drop_points"])
                    for r in m["rows"]
                    if r["scheme"] == scheme and r["ptq"] == ptq and "accuracy" in r and keep(r)
                )  # fmt: skip
                if pts:
                    bx, by = zip(*pts, strict=True)
                    label = f"{scheme}{' + PTQ' if ptq else ''}"
                    ax.plot(bx, by, style, marker="o", ms=3, color=colors[scheme], label=label)
        ax.axhline(0, color="k", lw=0.8, label="float")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlabel("weight bits")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("points lost vs float (symlog)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"{name}: float {100 * m['float_accuracy']:.2f} %, {m['test_samples']} test samples",
        fontsize=10,
    )
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _line(r: dict) -> str:
    head = f"| {r['scheme']} | {r['w_bits']} | {r['a_bits']} | {'yes' if r['ptq'] else ''} |"
    if "error" in r:
        return head + f" error: {r['error'][:60]} | | | |"
    bpw = f"{r['bits_per_weight']:.2f}" if r["bits_per_weight"] else ""
    return head + (
        f" {100 * r['accuracy']:.2f} | {r['drop_points']:+.2f} ± {r['stderr_points']:.2f} | "
        f"{r['weight_bytes'] / 1024:.1f} | {bpw} |"
    )


def partial_markdown(saved: dict) -> str:
    """:func:`markdown` of an ``accuracy.partial.json`` (a grid stopped part way): the
    finished models, then the rows measured so far of the unfinished one."""
    text = markdown(saved)
    part = saved.get("partial")
    if not part or not part.get("rows"):
        return text
    total = len(_grid(saved.get("fast", False)))
    lines = [
        f"## {part['model']} (unfinished: {len(part['rows'])} of {total} grid rows)",
        "",
        "| scheme | W | A | PTQ | accuracy % | drop | weight KiB | bits/weight |",
        "|---|---|---|---|---|---|---|---|",
        *[_line(r) for r in part["rows"]],
        "",
    ]
    return text + "\n".join(lines)


def markdown(results: dict) -> str:
    lines = ["# Post-training quantization accuracy (top-1, TVM LUT kernels on the host)", ""]
    lines += [
        f"PTQ = {', '.join(f'{k}={v}' for k, v in results['ptq'].items())} (MSE-initialized "
        "quantizers always). Per-channel weights, per-tensor uniform activations, 256 "
        "calibration samples from the train split. Drop in points vs float (± one "
        "binomial standard error). bits/weight counts codes and codebooks (fp32 levels) of "
        "the quantized layers.",
        "",
    ]
    for name, m in results["models"].items():
        lines += [
            f"## {name} ({m['dataset']}, {m['test_samples']} test samples)",
            "",
            f"Float: {100 * m['float_accuracy']:.2f} %; float weights "
            f"{m['float_weight_bytes'] / 1024:.1f} KiB. Plot: `accuracy_{name}.png`.",
            "",
            "| scheme | W | A | PTQ | accuracy % | drop | weight KiB | bits/weight |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [_line(r) for r in m["rows"]]
        if m.get("mixed"):
            r = m["mixed"]
            lines += ["", f"Mixed precision (k-means + PTQ, A8, budget {r['weight_budget']} B = "
                      "the uniform 3-bit model's size):", ""]  # fmt: skip
            if "error" in r:
                lines.append(f"error: {r['error']}")
            else:
                lines.append(
                    f"accuracy {100 * r['accuracy']:.2f} % (drop {r['drop_points']:+.2f} ± "
                    f"{r['stderr_points']:.2f}), {r['weight_bytes']} B, layer bits "
                    f"{r['layer_bits']}"
                )
        if m.get("draws"):
            d = m["draws"]
            spec = (
                f"{d['spec'][0]} W{d['spec'][1]}A{d['spec'][2]}{' + PTQ' if d['spec'][3] else ''}"
            )
            drops = ", ".join("error" if v is None else f"{v:+.2f}" for v in d["drop_points"])
            spread = f"{d['mean']:+.2f} ± {d['std']:.2f}" if d["std"] is not None else "n/a"
            lines += ["", f"Calibration draws ({spec}, seeds {d['seeds']}): drops {drops}; "
                      f"mean ± sd {spread} points.", ""]  # fmt: skip
        if m.get("tent"):
            lines += [
                "",
                "Against TENT (seed 002, Table 2, Fashion-MNIST; their model, not ours: "
                "compare drops). Per-tensor TFX and Qm.n fixed point, weights and "
                "activations at the same bits (activations: tvmq's uniform quantizer), and "
                "per-channel k-means + PTQ:",
                "",
                "| bits | TENT TFX | TENT fixed | tvmq tfx | tvmq fixed | tvmq kmeans+PTQ |",
                "|---|---|---|---|---|---|",
            ]
            by = {(r["scheme"], r["w_bits"]): r for r in m["tent"]}

            def cell(r):
                return "error" if r is None or "error" in r else f"{100 * r['accuracy']:.2f}"

            for b in TENT_BITS:
                t, f = TENT_TABLE2[b]
                lines.append(
                    f"| {b} | {t:.2f} | {f:.2f} | {cell(by.get(('tfx', b)))} | "
                    f"{cell(by.get(('fixed', b)))} | {cell(by.get(('kmeans', b)))} |"
                )
        lines.append("")
    return "\n".join(lines)
