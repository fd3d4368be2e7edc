"""``tvmq report``: a one-page Markdown report of a quantized model, with plots.

What it shows (each part a function that returns data, apart from the drawing):

- the config and manifest (versions, source model hash), weight bytes and compression;
- per layer: kind, shape, scheme, bits, weight SQNR, bytes and effective bits per weight
  (codes plus codebooks), as a table and a bar chart;
- per layer, the weight histogram of one output channel (the one with the widest range)
  with that channel's quantization levels drawn on it: where the levels sit against where
  the weights are is the point of non-linear quantization;
- the memory map of the generated C: flash (weights and tables) brought in by each kernel
  call, and the activation arena as buffers over time (offset vs call), from the same
  planner the deployment uses;
- optionally, accuracy on real test data, and accuracy vs weight bits for the model's
  scheme and the uniform baseline (re-quantizing the float model at each width).

The output directory is written atomically: a reader sees the old report or the new one.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TvmqError


def layer_table(qm) -> list[dict[str, Any]]:
    """Per layer: the :class:`relay_passes.LayerReport` fields plus ``numel`` and
    ``bits_per_weight`` (stored bytes x 8 / weights, codebooks included)."""
    rows = []
    for r in qm.layers:
        numel = int(np.prod(r.shape))
        d = r.to_dict()
        d["numel"] = numel
        d["bits_per_weight"] = 8 * r.quant_bytes / numel if numel else None
        rows.append(d)
    return rows


def channel_views(qm) -> list[dict[str, Any]]:
    """Per quantized layer: the float weights and the levels of its widest-range output
    channel (the whole tensor for per-tensor codebooks)."""
    from relay_passes import find_weight_sites

    from .artifact import weight_tables

    floats = {
        s.name: s.const.value.numpy()
        for s in find_weight_sites(qm.float_module["main"])
        if s.const is not None
    }
    out = []
    for name, t in weight_tables(qm).items():
        w = floats.get(name)
        shape = tuple(t["shape"])
        if w is None:
            continue
        if w.shape != shape and w.T.shape == shape:  # dense weights are stored transposed
            w = w.T
        if w.shape != shape:
            continue
        axis, levels = t["axis"], t["levels"]
        if axis < 0 or levels.shape[0] == 1:
            chan, values, lv = None, w.reshape(-1), levels[0]
        else:
            per = np.moveaxis(w, axis, 0).reshape(shape[axis], -1)
            chan = int(np.argmax(per.max(1) - per.min(1)))
            values = per[chan]
            groups_per_chan = levels.shape[0] // shape[axis]
            lv = levels[chan * groups_per_chan]
        out.append(
            {"name": name, "channel": chan, "weights": values, "levels": np.unique(lv),
             "bits": t["bits"]}
        )  # fmt: skip
    return out


def memory_map(qm) -> dict[str, Any]:
    """Flash and arena layout of the generated C (:func:`tvmq.backend.aot.generate_aot`)."""
    from .backend.aot import generate_aot, peak_live_bytes

    aot = generate_aot(qm.fused())
    return {
        "const_bytes": aot.const_bytes,
        "arena_bytes": aot.arena_bytes,
        "peak_live_bytes": peak_live_bytes(aot.buffers),
        "layers": aot.layers,
        "layer_const_bytes": aot.layer_const_bytes,
        "buffers": [{**dataclasses.asdict(b), "offset": aot.offsets[b.name]} for b in aot.buffers],
    }


def accuracy(qm, xs: np.ndarray, labels: np.ndarray, *, float_model: bool = False) -> float:
    """Top-1 accuracy (0..1) of ``qm``'s LUT build (or its float model) on ``xs``."""
    from .evaluate import accuracy as top1

    run = qm.run_float if float_model else qm.build().run
    return top1(lambda x: run(x[0]), xs, labels)  # xs[i] already has the batch dim


def accuracy_curve(qm, xs, labels, calib, bits=(2, 3, 4, 8), progress=None) -> list[dict]:
    """Accuracy vs weight bits for the model's scheme and uniform: the float model
    re-quantized at each width with the model's config otherwise unchanged."""
    from .quantizer import quantize
    from .schemes import make_config

    rows = []
    schemes = [qm.config.weight.name] + (["uniform"] if qm.config.weight.name != "uniform" else [])
    for scheme in schemes:
        for b in bits:
            if scheme == qm.config.weight.name:  # the model's options, another width
                weight = make_config({**qm.config.weight.to_dict(), "bits": b})
            else:
                weight = make_config({"scheme": scheme, "bits": b})
            cfg = dataclasses.replace(qm.config, weight=weight, overrides=())
            need = cfg.activation is not None or cfg.ptq.layerwise
            q = quantize(qm.float_module, cfg, calib=calib if need else None)
            rows.append({"scheme": scheme, "bits": b, "accuracy": accuracy(q, xs, labels)})
            if progress:
                progress()
    return rows


# -- drawing -------------------------------------------------------------------------------


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_weights(views: list[dict]) -> bytes:
    plt = _plt()
    n = max(len(views), 1)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, v in zip(axes.flat, views):
        ax.hist(v["weights"], bins=80, color="#7a9cc6")
        for lv in v["levels"]:
            ax.axvline(lv, color="#c0392b", lw=0.8, alpha=0.8)
        where = "all weights" if v["channel"] is None else f"channel {v['channel']}"
        ax.set_title(f"{v['name']} ({where}), {len(v['levels'])} levels", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("weight histograms (blue) and quantization levels (red)", fontsize=9)
    return _png(fig)


def plot_layers(rows: list[dict]) -> bytes:
    plt = _plt()
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(rows) + 2), 3.4))
    sqnr = [r["sqnr_db"] if r["sqnr_db"] is not None else 0 for r in rows]
    ax.bar(x - 0.2, sqnr, 0.4, color="#2e86c1", label="weight SQNR (dB)")
    ax.set_ylabel("weight SQNR (dB)")
    ax2 = ax.twinx()
    bpw = [r["bits_per_weight"] or 0 for r in rows]
    ax2.bar(x + 0.2, bpw, 0.4, color="#e67e22", label="bits / weight (incl. codebooks)")
    ax2.set_ylabel("bits per weight")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    fig.legend(loc="upper right", fontsize=7)
    ax.set_title("per layer: weight SQNR and stored bits per weight", fontsize=9)
    return _png(fig)


def plot_memory(mm: dict) -> bytes:
    plt = _plt()
    from matplotlib.patches import Rectangle

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(mm["layers"]))
    ax1.bar(x, [b / 1024 for b in mm["layer_const_bytes"]], color="#8e44ad")
    ax1.set_xlabel("kernel call")
    ax1.set_ylabel("KiB (flash)")
    ax1.set_title(f"weights + tables by call: {mm['const_bytes'] / 1024:.1f} KiB", fontsize=9)
    for b in mm["buffers"]:
        ax2.add_patch(
            Rectangle(
                (b["first"] - 0.4, b["offset"] / 1024), b["last"] - b["first"] + 0.8,
                b["nbytes"] / 1024, facecolor="#16a085", edgecolor="black", lw=0.5, alpha=0.8,
            )
        )  # fmt: skip
    ax2.set_xlim(-0.6, max(len(mm["layers"]) - 0.4, 0.6))
    ax2.set_ylim(0, max(mm["arena_bytes"], 1) / 1024 * 1.05)
    ax2.set_xlabel("kernel call (live range)")
    ax2.set_ylabel("arena offset (KiB)")
    ax2.set_title(
        f"activation arena: {mm['arena_bytes'] / 1024:.1f} KiB "
        f"(peak live {mm['peak_live_bytes'] / 1024:.1f} KiB)", fontsize=9,
    )  # fmt: skip
    return _png(fig)


def plot_curve(rows: list[dict], float_acc: float | None) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        pts = [(r["bits"], 100 * r["accuracy"]) for r in rows if r["scheme"] == scheme]
        ax.plot(*zip(*pts), marker="o", label=scheme)
    if float_acc is not None:
        ax.axhline(100 * float_acc, color="gray", ls="--", lw=1, label="float32")
    ax.set_xlabel("weight bits")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.legend(fontsize=7)
    ax.set_title("accuracy vs weight bits", fontsize=9)
    return _png(fig)


# -- assembling ----------------------------------------------------------------------------


def _markdown(title: str, qm, rows, mm, acc: dict | None, curve) -> str:
    rep = qm.report()
    man = qm.manifest or {}
    lines = [f"# {title}", ""]
    lines.append(
        f"Config: `{qm.config.weight.name}` W{qm.config.weight.bits}, "
        f"granularity {qm.config.granularity}, activations "
        + ("float32" if qm.config.activation is None else
           f"{qm.config.activation.bits}-bit ({qm.config.activation.requantize} epilogues)")
        + (f", layout {qm.layout}" if qm.layout else "")
    )  # fmt: skip
    if man:
        src = man.get("source") or {}
        lines.append(
            f"Artifact format {man.get('format_version')} by tvmq {man.get('tvmq_version')}, "
            f"TVM {man.get('tvm_version')}"
            + (
                f"; source `{src.get('name')}` sha256 `{src.get('sha256', '')[:16]}…`"
                if src
                else ""
            )
        )
    lines += [
        "",
        f"Weights: {rep['float_weight_bytes'] / 1024:.1f} KiB float32 → "
        f"{rep['quant_weight_bytes'] / 1024:.1f} KiB codes + codebooks "
        f"({rep['compression']:.1f}x smaller).",
        "",
    ]
    if acc is not None:
        lines += [
            f"Accuracy on {acc['samples']} {acc['data']} test samples: float "
            f"{100 * acc['float']:.2f} %, quantized {100 * acc['quantized']:.2f} % "
            f"({100 * (acc['float'] - acc['quantized']):+.2f} points lost; one standard "
            f"error {acc['stderr_points']:.2f}).",
            "",
        ]
    lines += [
        "## Layers",
        "",
        "| layer | kind | shape | scheme | bits | weight SQNR | bytes | bits/weight |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        db = "-" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f} dB"
        bpw = "-" if r["bits_per_weight"] is None else f"{r['bits_per_weight']:.2f}"
        lines.append(
            f"| {r['name']} | {r['kind']} | {'x'.join(map(str, r['shape']))} | "
            f"{r['scheme'] or 'float'} | {r['bits'] or 32} | {db} | {r['quant_bytes']:,} | {bpw} |"
        )
    lines += ["", "![per-layer SQNR and bits](layers.png)", "", "## Weights and levels", ""]
    lines += ["![weight histograms with levels](weights.png)", ""]
    if mm is not None:
        lines += [
            "## Memory map (generated C)",
            "",
            f"Flash for weights and tables {mm['const_bytes'] / 1024:.1f} KiB; activation arena "
            f"{mm['arena_bytes'] / 1024:.1f} KiB (the largest set of tensors live at one call "
            f"needs {mm['peak_live_bytes'] / 1024:.1f} KiB).",
            "",
            "| call | kernel | new constants |",
            "|---:|---|---:|",
        ]
        for i, (k, b) in enumerate(zip(mm["layers"], mm["layer_const_bytes"])):
            lines.append(f"| {i} | `{k}` | {b:,} |")
        lines += ["", "![memory map](memory.png)", ""]
    if curve:
        lines += ["## Accuracy vs bits", "", "| scheme | bits | accuracy |", "|---|---:|---:|"]
        lines += [f"| {r['scheme']} | {r['bits']} | {100 * r['accuracy']:.2f} % |" for r in curve]
        lines += ["", "![accuracy vs bits](accuracy.png)", ""]
    return "\n".join(lines) + "\n"


def write_report(
    qm,
    out_dir: str | Path,
    *,
    title: str = "tvmq report",
    memory: bool = True,
    acc: dict | None = None,
    curve: list[dict] | None = None,
) -> Path:
    """Write ``report.md`` and its PNGs to ``out_dir`` (replaced atomically).

    ``acc`` is ``{"data", "samples", "float", "quantized", "stderr_points"}`` and ``curve``
    the rows of :func:`accuracy_curve`, both optional (they need labelled data)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TvmqError(f"{out_dir} exists and is not a directory")
    rows = layer_table(qm)
    mm = memory_map(qm) if memory else None
    files = {
        "layers.png": plot_layers(rows),
        "weights.png": plot_weights(channel_views(qm)),
    }
    if mm is not None:
        files["memory.png"] = plot_memory(mm)
    if curve:
        files["accuracy.png"] = plot_curve(curve, acc["float"] if acc else None)
    files["report.md"] = _markdown(title, qm, rows, mm, acc, curve).encode()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        os.chmod(tmp, 0o755)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "report.md"
