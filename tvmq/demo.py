"""The main job, ``make demo``: what tvmq can do end to end today, on real data.

1. Train a small multilayer perceptron on Fashion-MNIST (numpy, fixed seed, ~20 s) and
   export it to ONNX.
2. For every scheme and bit width, quantize it with ``tvmq.quantize`` (Relax passes),
   build the LUT-kernel module with TVM for the host, and measure test accuracy on all
   10,000 test images with the kernels that read packed codes (activations stay float).
3. The shipped TENT ConvNet (``models/fmnist_convnet.onnx``, 1.87 M parameters):
   quantize to 4-bit k-means weights and int8 activations (channels-last, integer-only
   fixed-point epilogues), tune its LUT kernels briefly on the host (MetaSchedule,
   XGBoost), generate plain C with a static arena and tvmq's MCU schedule, run it on an
   emulated Cortex-M4 (QEMU mps2-an386) on real test images, and report float vs device
   accuracy (device checked bit-identical to the host C build), flash, RAM, stack and
   instructions per inference with the costliest layers.
4. Quantize the real weights of the MLPerf Tiny KWS DS-CNN and IC ResNet-8 models and
   report weight SQNR and size (codes + codebooks) per scheme and bit width.

Host tuning speeds up the host build; the MCU C code uses tvmq's hand-written schedule
(QEMU-measured tuning is not wired in yet, see the README).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from . import __version__
from .analysis import quantize_layers
from .datasets import fashion_mnist
from .errors import TvmqError
from .frontend import read_tflite_weights
from .io import atomic_write_json

SCHEMES = ("uniform", "quantile", "kmeans", "tfx", "pot", "nf")
REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models" / "mlperf_tiny"


def train_mlp(
    x: np.ndarray, y: np.ndarray, *, hidden: int = 128, epochs: int = 6, seed: int = 0
) -> list[np.ndarray]:
    """Train a 784-``hidden``-10 ReLU MLP with SGD + momentum; returns ``[W1, b1, W2, b2]``.

    ``x`` is ``(N, 784)`` float32 in [0, 1], ``y`` ``(N,)`` int labels. Deterministic for a
    seed up to BLAS summation order.
    """
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((784, hidden)) * np.sqrt(2 / 784)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, 10)) * np.sqrt(1 / hidden)).astype(np.float32)
    params = [w1, np.zeros(hidden, np.float32), w2, np.zeros(10, np.float32)]
    moms = [np.zeros_like(p) for p in params]
    n, batch = x.shape[0], 128
    steps = epochs * (n // batch)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            lr = 0.1 * 0.5 * (1 + np.cos(np.pi * step / steps))
            idx = order[i : i + batch]
            xb, yb = x[idx], y[idx]
            h = np.maximum(xb @ params[0] + params[1], 0)
            logits = h @ params[2] + params[3]
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(batch), yb] -= 1
            g_logits = p / batch
            g_h = (g_logits @ params[2].T) * (h > 0)
            grads = [xb.T @ g_h, g_h.sum(0), h.T @ g_logits, g_logits.sum(0)]
            for j, g in enumerate(grads):
                moms[j] = 0.9 * moms[j] + g + (5e-4 * params[j] if j % 2 == 0 else 0)
                params[j] = params[j] - lr * moms[j]
            step += 1
    return params


def mlp_accuracy(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (%) of the MLP on ``x`` (numpy float reference)."""
    h = np.maximum(x @ params[0] + params[1], 0)
    return 100.0 * float(np.mean(np.argmax(h @ params[2] + params[3], 1) == y))


def mlp_to_onnx(params: list[np.ndarray], batch: int):
    """The MLP as an ONNX model with a fixed batch: Gemm -> Relu -> Gemm."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fashion_mnist_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 784])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        initializer=[
            numpy_helper.from_array(a.astype(np.float32), n)
            for a, n in zip(params, ["w1", "b1", "w2", "b2"])
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def convnet_stage(out_dir: Path, console: Console, n_test: int = 200, tune_trials: int = 8) -> dict:
    """Step 3 of the module doc on the shipped ConvNet; returns the numbers it prints."""

    from . import zoo
    from .backend.aot import generate_aot
    from .backend.host import HostModel
    from .backend.qemu import DEFAULT_BOARD, run_on_device
    from .config import fixed_point
    from .evaluate import accuracy, calibration_set, load_split
    from .quantizer import quantize

    name = "fmnist_convnet"
    meta = zoo.info(name)
    cfg = fixed_point("w4-kmeans-a8")
    with console.status("W4A8 k-means, 256 calibration images (train split), NHWC..."):
        qm = quantize(
            zoo.model_path(name), cfg, calib=calibration_set(meta["dataset"], 256),
            layout="NHWC",
        )  # fmt: skip
        aot = generate_aot(qm.fused())
    x, y = load_split(meta["dataset"], "test")
    x, y = x[:n_test], y[:n_test]
    tuned = None
    if tune_trials:
        from .tune import kernel_times, tune

        with console.status(f"tuning the LUT kernels on the host ({tune_trials} trials)..."):
            res = tune(qm, out_dir / "tuning", trials=tune_trials, time_limit_s=180)
            names = sorted(res.tasks)
            before = kernel_times(qm, names=names)
            after = kernel_times(qm, names=names, tuning=out_dir / "tuning")
        tuned = {
            "trials": sum(t.trials for t in res.tasks.values()),
            "seconds": res.seconds,
            "host_kernel_us": {n: [before[n] * 1e6, after[n] * 1e6] for n in names},
        }
    with console.status(f"{n_test} test images on QEMU {DEFAULT_BOARD} (Cortex-M4F)..."):
        xs = x.reshape(n_test, 1, *x.shape[1:])
        dev = run_on_device(aot, xs, out_dir / "convnet_device", DEFAULT_BOARD)
        host = HostModel(aot, out_dir / "convnet_host")
        host_out = np.stack([host.run(v) for v in xs])
        if not np.array_equal(dev.outputs.view(np.uint32), host_out.view(np.uint32)):
            raise TvmqError("device outputs differ from the host build of the same C")
        float_acc = 100 * accuracy(qm.run_float, x, y)
    dev_acc = 100.0 * float(np.mean(dev.outputs.reshape(n_test, -1).argmax(1) == y))
    instr = int(np.median(dev.instructions))
    layers = sorted(zip(dev.layer_instructions, aot.layers), reverse=True)[:3]
    table = Table(title=f"Deployed: W4A8 k-means TENT ConvNet on QEMU {DEFAULT_BOARD}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row(f"float accuracy (TVM, first {n_test} test images)", f"{float_acc:.1f} %")
    table.add_row("device accuracy (same images, bit-identical to host C)", f"{dev_acc:.1f} %")
    table.add_row("float accuracy, full test set (training record)",
                  f"{100 * meta['float_accuracy']:.2f} %")  # fmt: skip
    table.add_row("model constants (packed 4-bit codes, int8 tables)",
                  f"{aot.const_bytes / 1024:.0f} KiB")  # fmt: skip
    table.add_row("float32 weights for comparison", f"{4 * meta['parameters'] / 1024:.0f} KiB")
    table.add_row("flash: text + data (incl. test images)", f"{dev.flash_bytes / 1024:.0f} KiB")
    table.add_row("RAM: data + bss (incl. arena)", f"{dev.ram_bytes / 1024:.1f} KiB")
    table.add_row("activation arena", f"{aot.arena_bytes / 1024:.1f} KiB")
    table.add_row("stack high-water (main + one inference)", f"{dev.stack_bytes} B")
    table.add_row("instructions per inference (median)", f"{instr / 1e6:.1f} M")
    for n, k in layers:
        table.add_row(f"  of which {k}", f"{n / 1e6:.1f} M")
    if tuned:
        total = [sum(v[i] for v in tuned["host_kernel_us"].values()) for i in (0, 1)]
        table.add_row(
            f"host LUT kernels, TE default -> tuned ({tuned['trials']} trials)",
            f"{total[0]:.0f} -> {total[1]:.0f} us",
        )
    console.print(table)
    from .evaluate import standard_error
    from .report import write_report

    with console.status("writing the artifact and the report with plots..."):
        artifact = qm.save(out_dir / f"{name}_w4a8.tvmq", source=zoo.model_path(name))
        se = 100 * standard_error(dev_acc / 100, n_test)
        acc = {
            "data": meta["dataset"], "samples": n_test, "float": float_acc / 100,
            "quantized": dev_acc / 100, "stderr_points": se,
        }  # fmt: skip
        report = write_report(qm, out_dir / "report", title=f"tvmq demo: {name} W4A8", acc=acc)
    console.print(f"artifact: [bold]{artifact}[/]; report with plots: [bold]{report}[/]")
    return {
        "artifact": str(artifact),
        "report": str(report),
        "model": name,
        "board": DEFAULT_BOARD,
        "config": cfg.to_dict(),
        "samples": n_test,
        "float_accuracy": float_acc,
        "device_accuracy": dev_acc,
        "flash_bytes": dev.flash_bytes,
        "ram_bytes": dev.ram_bytes,
        "const_bytes": aot.const_bytes,
        "arena_bytes": aot.arena_bytes,
        "stack_bytes": dev.stack_bytes,
        "instructions_median": instr,
        "layers": [
            {"kernel": k, "instructions": n} for k, n in zip(aot.layers, dev.layer_instructions)
        ],
        "host_tuning": tuned,
    }


def _fmt(v: float) -> str:
    return "lossless" if v == float("inf") else f"{v:.1f}"


def run(out_dir: Path, bits: tuple[int, ...], console: Console, tune_trials: int = 8) -> dict:
    """Run the demo; returns the results written to ``out_dir/demo.json``."""
    results: dict = {"tvmq_version": __version__, "stage": "deploy + tune", "fashion_mnist": {}}
    t0 = time.time()
    console.rule("[bold]tvmq demo: non-linear weight quantization on real data")

    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    xtr = xtr.reshape(-1, 784).astype(np.float32) / 255
    xte = xte.reshape(-1, 784).astype(np.float32) / 255
    with console.status("training a 784-128-10 MLP on Fashion-MNIST (numpy, seed 0)..."):
        params = train_mlp(xtr, ytr)
    float_acc = mlp_accuracy(params, xte, yte)
    console.print(f"float MLP test accuracy: [bold]{float_acc:.2f}%[/] on 10,000 test images")

    from .config import QuantConfig
    from .quantizer import quantize

    onnx_model = mlp_to_onnx(params, batch=xte.shape[0])
    acc, kib = {}, {}
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task(
            "quantize -> build LUT kernels (TVM, llvm) -> run 10k images",
            total=len(SCHEMES) * len(bits),
        )
        for scheme in SCHEMES:
            for b in bits:
                qm = quantize(onnx_model, QuantConfig(weight={"scheme": scheme, "bits": b}))
                logits = qm.build().run(xte)
                acc[(scheme, b)] = 100.0 * float(np.mean(logits.argmax(1) == yte))
                kib[(scheme, b)] = qm.report()["quant_weight_bytes"] / 1024
                prog.advance(task)
    float_kib = sum(p.nbytes for p in params) / 1024
    table = Table(
        title=f"Fashion-MNIST MLP on TVM LUT kernels: test accuracy % (float {float_acc:.2f}%),"
        f" weights only, per output channel; stored KiB (float {float_kib:.0f})"
    )
    table.add_column("scheme")
    for b in bits:
        table.add_column(f"W{b}", justify="right")
    for scheme in SCHEMES:
        table.add_row(scheme, *(f"{acc[(scheme, b)]:.2f} ({kib[(scheme, b)]:.0f})" for b in bits))
    console.print(table)
    results["fashion_mnist"] = {
        "model": "MLP 784-128-10 (numpy, seed 0), run as TVM LUT kernels",
        "float_accuracy": float_acc,
        "accuracy": [
            {"scheme": s, "bits": b, "accuracy": a, "stored_kib": kib[(s, b)]}
            for (s, b), a in acc.items()
        ],
    }

    results["device"] = convnet_stage(out_dir, console, tune_trials=tune_trials)

    results["mlperf_tiny"] = {}
    for name in ("kws_dscnn_float32", "ic_resnet8_float32"):
        path = SHARED_MODELS / f"{name}.tflite"
        if not path.exists():
            console.print(f"[yellow]skipping {name}: {path} is absent[/]")
            continue
        layers = read_tflite_weights(path)
        numel = sum(layer.weight.size for layer in layers)
        rows = []
        with Progress(console=console, transient=True) as prog:
            task = prog.add_task(f"quantizing {name}", total=len(SCHEMES) * len(bits))
            for scheme in SCHEMES:
                for b in bits:
                    rows.append(quantize_layers(layers, scheme, b))
                    prog.advance(task)
        table = Table(
            title=f"{name}: weight SQNR dB, per-channel ({numel:,} weights, "
            f"float {4 * numel / 1024:.1f} KiB)"
        )
        table.add_column("scheme")
        for b in bits:
            table.add_column(f"W{b}", justify="right")
        table.add_column("KiB @4b", justify="right")
        for scheme in SCHEMES:
            mine = {r.bits: r for r in rows if r.scheme == scheme}
            size4 = f"{mine[4].bytes_total / 1024:.1f}" if 4 in mine else "-"
            table.add_row(scheme, *(_fmt(mine[b].sqnr_db) for b in bits), size4)
        console.print(table)
        results["mlperf_tiny"][name] = [r.to_dict() for r in rows]

    results["seconds"] = round(time.time() - t0, 1)
    path = atomic_write_json(out_dir / "demo.json", results)
    console.print(f"results written to [bold]{path}[/] in {results['seconds']} s")
    console.print(
        "[dim]MLP sizes are what the LUT kernels store: packed codes plus float32 level "
        "tables. Accuracy of every scheme x bit width on the four shipped models, full "
        "test sets: benchmarks/results/accuracy_full_grid.md (make bench measures it "
        "again into bench_results/accuracy.md).[/]"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tvmq.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "demo_results")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 8])
    parser.add_argument("--tune-trials", type=int, default=8, help="host tuning (0: skip)")
    args = parser.parse_args(argv)
    console = Console()
    try:
        run(args.out, tuple(args.bits), console, args.tune_trials)
    except TvmqError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
