"""Top-1 accuracy of the shipped models under post-training quantization, on real test data.

For each model of :mod:`tvmq.zoo`: the float model and every (scheme, weight bits,
activation bits) of the grid, each built by TVM with tvmq's LUT kernels and run on the
test images (the full test set unless ``--fast``). Calibration uses 256 training images,
never test data. Each row carries its weight size (codes + codebooks) and one binomial
standard error; uniform rows are the baseline through the same pipeline with as many
levels as the codebooks (2^b).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tvmq import zoo
from tvmq.config import QuantConfig
from tvmq.evaluate import accuracy, calibration_set, load_split, standard_error
from tvmq.frontend.load import load_model
from tvmq.io import atomic_write_json
from tvmq.quantizer import quantize

SCHEMES = ("uniform", "kmeans", "quantile", "nf", "pot", "tfx")
LOW_BITS = ((8, 8), (6, 6), (5, 5), (4, 8), (4, 4), (3, 8), (3, 3), (2, 8), (2, 2))
# (scheme, weight bits, activation bits, layer-wise PTQ)
GRID = (
    [(s, wb, ab, False) for wb, ab in LOW_BITS for s in ("uniform", "kmeans")]
    + [(s, wb, wb, False) for wb in (8, 6, 5, 4) for s in ("quantile", "nf", "pot", "tfx")]
    + [("kmeans", wb, ab, True) for wb, ab in ((4, 4), (3, 3), (2, 8), (2, 2))]
)
GRID_FAST = [
    ("uniform", 4, 8, False), ("kmeans", 4, 8, False), ("kmeans", 4, 4, False),
    ("uniform", 2, 8, False), ("kmeans", 2, 8, False), ("kmeans", 2, 8, True),
]  # fmt: skip


def _grid(fast: bool):
    return GRID_FAST if fast else GRID


def run(out_dir: Path, fast: bool = False, progress=None, models=None) -> dict:
    results: dict = {"models": {}, "fast": fast}
    for name in models or zoo.available():
        meta = zoo.info(name)
        x, y = load_split(meta["dataset"], "test")
        if fast:
            x, y = x[:1000], y[:1000]
        calib = calibration_set(meta["dataset"], 256)
        mod = load_model(zoo.model_path(name))
        t0 = time.time()
        first = quantize(mod, QuantConfig(weight={"scheme": "uniform", "bits": 8}))
        float_acc = accuracy(first.run_float, x, y)
        rows = []
        for scheme, wb, ab, lw in _grid(fast):
            act = {"bits": ab} if ab else None
            cfg = QuantConfig(
                weight={"scheme": scheme, "bits": wb}, activation=act, ptq={"layerwise": lw}
            )
            try:
                qm = quantize(mod, cfg, calib=calib if (act or lw) else None).build()
                acc = accuracy(qm.run, x, y)
            except Exception as exc:  # a scheme that cannot represent a layer: say so
                rows.append(
                    {"scheme": scheme, "w_bits": wb, "a_bits": ab, "layerwise": lw,
                     "error": str(exc)}
                )  # fmt: skip
                continue
            rep = qm.report()
            n_w = sum(int(np.prod(r["shape"])) for r in rep["layers"] if "shape" in r) or None
            rows.append(
                {
                    "scheme": scheme,
                    "w_bits": wb,
                    "a_bits": ab,
                    "layerwise": lw,
                    "accuracy": acc,
                    "drop_points": 100 * (float_acc - acc),
                    "stderr_points": 100 * standard_error(acc, len(y)),
                    "weight_bytes": rep["quant_weight_bytes"],
                    "bits_per_weight": 8 * rep["quant_weight_bytes"] / n_w if n_w else None,
                }
            )
            if progress is not None:
                progress()
            # an hour-long grid: keep what is measured if the run is stopped
            partial = {**results, "partial": {"model": name, "rows": rows}}
            atomic_write_json(out_dir / "accuracy.partial.json", partial)
        results["models"][name] = {
            "dataset": meta["dataset"],
            "test_images": len(y),
            "float_accuracy": float_acc,
            "float_accuracy_recorded": meta["float_accuracy"],
            "float_weight_bytes": first.report()["float_weight_bytes"],
            "seconds": round(time.time() - t0),
            "rows": rows,
        }
    return results


def markdown(results: dict) -> str:
    lines = ["# Post-training quantization accuracy (top-1, TVM LUT kernels on the host)", ""]
    for name, m in results["models"].items():
        lines += [
            f"## {name} ({m['dataset']}, {m['test_images']} test images)",
            "",
            f"Float: {100 * m['float_accuracy']:.2f} %. Drop in points (± one standard error).",
            "",
            "| scheme | W | A | PTQ | accuracy % | drop | weight KiB | bits/weight |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in m["rows"]:
            if "error" in r:
                lines.append(f"| {r['scheme']} | {r['w_bits']} | {r['a_bits']} | | error: "
                             f"{r['error'][:60]} | | | |")  # fmt: skip
                continue
            bpw = f"{r['bits_per_weight']:.2f}" if r["bits_per_weight"] else ""
            lines.append(
                f"| {r['scheme']} | {r['w_bits']} | {r['a_bits']} | "
                f"{'layer-wise' if r['layerwise'] else ''} | {100 * r['accuracy']:.2f} | "
                f"{r['drop_points']:+.2f} ± {r['stderr_points']:.2f} | "
                f"{r['weight_bytes'] / 1024:.1f} | {bpw} |"
            )
        lines.append("")
    return "\n".join(lines)
