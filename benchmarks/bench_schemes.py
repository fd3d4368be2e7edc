"""Weight SQNR by scheme x bits (2-8) on the real weights of the MLPerf Tiny float models.

Writes ``schemes.json``, ``schemes.md`` and ``schemes.png`` (SQNR vs bits per scheme, one
panel per model and granularity). Model SQNR is total weight energy over total error energy
across all conv / depthwise / dense layers; sizes count packed codes plus float32 codebooks.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from rich.progress import Progress

from tvmq.analysis import sqnr_table
from tvmq.frontend import read_tflite_weights
from tvmq.io import atomic_write_bytes, atomic_write_json, atomic_write_text

SCHEMES = ("uniform", "quantile", "kmeans", "tfx", "tfx-mse", "pot", "nf")
# TFX with the paper's Algorithm 1 and with an MSE sweep of IS/SC (as its experiments do).
VARIANTS = {"tfx-mse": ("tfx-mse", "tfx", {"select": "mse"})}
BITS = (2, 3, 4, 5, 6, 7, 8)
GRANULARITIES = ("channel", "tensor")
MODELS = ("kws_dscnn_float32", "ic_resnet8_float32")


def run(out_dir: Path, models_dir: Path) -> dict:
    results: dict = {"bits": list(BITS), "schemes": list(SCHEMES), "models": {}}
    jobs = [m for m in MODELS if (models_dir / f"{m}.tflite").exists()]
    if not jobs:
        results["skipped"] = f"no MLPerf Tiny models in {models_dir}"
        atomic_write_json(out_dir / "schemes.json", results)
        return results
    with Progress(transient=True) as prog:
        task = prog.add_task(
            "scheme x bits", total=len(jobs) * len(GRANULARITIES) * len(SCHEMES) * len(BITS)
        )
        for model in jobs:
            layers = read_tflite_weights(models_dir / f"{model}.tflite")
            results["models"][model] = {"weights": int(sum(x.weight.size for x in layers))}
            for gran in GRANULARITIES:
                rows = sqnr_table(
                    layers,
                    [VARIANTS.get(s, s) for s in SCHEMES],
                    BITS,
                    granularity=gran,
                    progress=lambda *_: prog.advance(task),
                )
                results["models"][model][gran] = [r.to_dict() for r in rows]
    atomic_write_json(out_dir / "schemes.json", results)
    atomic_write_text(out_dir / "schemes.md", _markdown(results))
    atomic_write_bytes(out_dir / "schemes.png", _plot(results))
    return results


def _markdown(results: dict) -> str:
    lines = ["# Weight SQNR (dB) by scheme and bits, MLPerf Tiny float models", ""]
    for model, data in results["models"].items():
        for gran in GRANULARITIES:
            lines += [f"## {model}, per {gran} ({data['weights']:,} weights)", ""]
            lines.append("| scheme | " + " | ".join(f"W{b}" for b in BITS) + " | bits/w @4 |")
            lines.append("|---" * (len(BITS) + 2) + "|")
            for s in SCHEMES:
                rows = {r["bits"]: r for r in data[gran] if r["scheme"] == s}
                cells = [
                    "lossless" if math.isinf(rows[b]["sqnr_db"]) else f"{rows[b]['sqnr_db']:.1f}"
                    for b in BITS
                ]
                lines.append(
                    f"| {s} | " + " | ".join(cells) + f" | {rows[4]['bits_per_weight']:.2f} |"
                )
            lines.append("")
    return "\n".join(lines)


def _plot(results: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    fig, axes = plt.subplots(
        len(models), len(GRANULARITIES), figsize=(11, 4 * len(models)), squeeze=False
    )
    for i, model in enumerate(models):
        for j, gran in enumerate(GRANULARITIES):
            ax = axes[i][j]
            for s in SCHEMES:
                rows = [r for r in results["models"][model][gran] if r["scheme"] == s]
                ys = [min(r["sqnr_db"], 60.0) for r in rows]
                ax.plot([r["bits"] for r in rows], ys, marker="o", label=s)
            ax.set_title(f"{model} (per {gran})")
            ax.set_xlabel("weight bits")
            ax.set_ylabel("weight SQNR (dB, lossless drawn at 60)")
            ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
