"""Cost on an emulated Cortex-M4F (QEMU mps2-an386): instructions per inference, flash, RAM.

For the MLPerf Tiny KWS DS-CNN and IC ResNet-8 float models, compiled by this pipeline as
(a) an int8 uniform baseline (W8A8) and (b) 4-bit and 2-bit k-means LUT models (W4A8,
W2A8), all with integer-only fixed-point epilogues. No KWS or CIFAR data ships, so the
activation ranges come from random inputs: the numbers are costs, not accuracy.

Reference points from the deployment issue (TFLite Micro on the same emulated board): KWS
int8 7.70 M instructions with CMSIS-NN (43.0 M reference kernels), 22.8 KB arena; IC
29.9 M (107.4 M), 55.0 KB arena. The integer kernels use tvmq's hand-written MCU schedule
(:mod:`tvmq.backend.schedule`: per-channel decode, scalar accumulator, fused epilogue,
SMLAD dot products), not yet autotuned. Per-layer instruction counts go into the JSON.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm

from relay_passes._graph import op_name
from tvmq.backend.aot import generate_aot, peak_live_bytes
from tvmq.backend.qemu import DEFAULT_BOARD, run_on_device
from tvmq.config import fixed_point
from tvmq.quantizer import quantize

MODELS = {
    "kws_dscnn_float32": ((1, 49, 10, 1), (-50.0, 50.0)),
    "ic_resnet8_float32": ((1, 32, 32, 3), (0.0, 255.0)),
}
CONFIGS = ("w8-uniform-a8", "w4-kmeans-a8", "w4-kmeans-shared-a8", "w2-kmeans-a8")
TFLM = {
    "kws_dscnn_float32": {"cmsis_nn": 7.70e6, "reference": 43.0e6, "arena": 22.8e3},
    "ic_resnet8_float32": {"cmsis_nn": 29.9e6, "reference": 107.4e6, "arena": 55.0e3},
}


def weight_bytes(fused) -> int:
    """Bytes of packed codes and int8 level tables the LUT kernels of ``fused`` read (the
    requantize constants, which an int8 model has as well, not counted)."""
    seen, total = set(), 0
    for block in fused["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if op_name(v) != "relax.call_tir":
                continue
            if not v.args[0].name_hint.split("fused_")[-1].startswith("lut_"):
                continue
            for a in v.args[1].fields[1:3]:  # (input, packed codes, table, ...)
                if isinstance(a, tvm.ir.GenericConst) and a not in seen:
                    seen.add(a)
                    total += a.value.numpy().nbytes
    return total


def run(out_dir: Path, models_dir: Path, progress=None) -> dict:
    results: dict = {"board": DEFAULT_BOARD, "models": {}, "tflm_reference": TFLM}
    for name, (shape, (lo, hi)) in MODELS.items():
        path = models_dir / f"{name}.tflite"
        if not path.exists():
            continue
        rng = np.random.default_rng(0)
        calib = [rng.uniform(lo, hi, shape).astype(np.float32) for _ in range(8)]
        xs = rng.uniform(lo, hi, (2, *shape)).astype(np.float32)
        rows = []
        for preset in CONFIGS:
            qm = quantize(path, fixed_point(preset), calib=calib)
            aot = generate_aot(qm.fused())
            dev = run_on_device(aot, xs, out_dir / "device" / name / preset, DEFAULT_BOARD)
            rows.append(
                {
                    "config": preset + " (fixed-point)",
                    "instructions": int(np.median(dev.instructions)),
                    "flash_bytes": dev.flash_bytes,
                    "ram_bytes": dev.ram_bytes,
                    "stack_bytes": dev.stack_bytes,
                    "arena_bytes": aot.arena_bytes,
                    "peak_live_bytes": peak_live_bytes(aot.buffers),
                    "const_bytes": aot.const_bytes,
                    "weight_bytes": weight_bytes(qm.fused()),
                    "int8_weight_bytes": int(sum(np.prod(r.shape) for r in qm.layers)),
                    "layers": [
                        {"kernel": k, "instructions": n}
                        for k, n in zip(aot.layers, dev.layer_instructions)
                    ],
                }
            )
            if progress is not None:
                progress()
        results["models"][name] = rows
    return results


TARGET_SPEEDUP = 0.8
"""The deployment issue's goal: at W4A8 at most 0.8x TFLM + CMSIS-NN's instructions."""
HALF = 0.55
""""About half the int8 weight flash": codes + tables at most this fraction of it."""


def targets(results: dict) -> dict:
    """Per model and 4-bit config, the deployment issue's targets: ``instructions`` (<= 0.8x
    CMSIS-NN), ``arena`` (<= TFLM's), ``flash`` (codes + tables <= ~half the int8
    weights) and ``vs_int8`` (no more instructions than our own W8A8 baseline)."""
    out = {}
    for name, rows in results["models"].items():
        ref = results["tflm_reference"][name]
        base = next((r for r in rows if r["config"].startswith("w8-")), None)
        for r in rows:
            if not r["config"].startswith("w4-"):
                continue
            out.setdefault(name, {})[r["config"]] = {
                "instructions": r["instructions"] <= TARGET_SPEEDUP * ref["cmsis_nn"],
                "arena": r["arena_bytes"] <= ref["arena"],
                "flash": r["weight_bytes"] <= HALF * r["int8_weight_bytes"],
                "vs_int8": base is not None and r["instructions"] <= base["instructions"],
            }
    return out


def markdown(results: dict) -> str:
    lines = [f"# Cost on QEMU {results['board']} (tvmq MCU schedule, untuned)", ""]
    for name, rows in results["models"].items():
        ref = results["tflm_reference"][name]
        lines += [
            f"## {name}",
            "",
            f"TFLite Micro int8: {ref['cmsis_nn'] / 1e6:.1f} M instructions with CMSIS-NN, "
            f"{ref['reference'] / 1e6:.1f} M with reference kernels, arena "
            f"{ref['arena'] / 1e3:.1f} KB.",
            "",
            "| config | instructions | flash KiB | RAM KiB | arena B | stack B "
            "| constants KiB | codes+tables KiB (vs int8 weights) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            ratio = r["weight_bytes"] / r["int8_weight_bytes"]
            lines.append(
                f"| {r['config']} | {r['instructions'] / 1e6:.2f} M | "
                f"{r['flash_bytes'] / 1024:.1f} | {r['ram_bytes'] / 1024:.1f} | "
                f"{r['arena_bytes']} | {r['stack_bytes']} | "
                f"{r['const_bytes'] / 1024:.1f} | {r['weight_bytes'] / 1024:.1f} "
                f"({ratio:.2f}x) |"
            )
        lines.append("")
        verdicts = targets(results).get(name, {})
        if verdicts:
            lines += [
                f"Targets (<= {TARGET_SPEEDUP}x CMSIS-NN instructions, arena <= TFLM, "
                f"codes + tables <= {HALF}x int8 weights, instructions <= our W8A8):",
                "",
            ]
            for config, v in verdicts.items():
                got = ", ".join(f"{k} {'met' if ok else 'missed'}" for k, ok in v.items())
                lines.append(f"- {config}: {got}")
            lines.append("")
    return "\n".join(lines)
