"""Tuning benchmark (issue: autotuning): what MetaSchedule buys on the host and on the MCU.

Host (llvm, one core, batch 1): per MLPerf Tiny model, the W4A8 LUT model with tvmq's
schedule and tuned (its kernels also against TE's default), TVM float32 untuned and tuned
with the same budget, and the peer a
user would pick, LiteRT (XNNPACK) float32 and int8 (optional: ``ai-edge-litert``). All
systems are timed interleaved, round after round, in one process (the machine is shared
and noisy): min and median per system.

MCU (QEMU ``mps2-an386``, exact instruction counts): per LUT kernel TE default, tvmq's
schedule and tuned on the emulated core (``tune(target="qemu:...")``), and the whole
deployed model before and after, with the tuning time.

Calibration uses random inputs (the MLPerf data sets are not shipped): fine for speed,
meaningless for accuracy, which this benchmark does not report.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import tvm

MODELS = ("kws_dscnn", "ic_resnet8")


def _quantized(models: Path, name: str):
    import tvmq
    from tvmq.config import fixed_point

    path = models / f"{name}_float32.tflite"
    mod = tvmq.load_model(path)
    shape = tuple(int(s) for s in mod["main"].params[0].ty.shape)
    calib = list(np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32))
    return tvmq.quantize(mod, fixed_point("w4-kmeans-a8"), calib=calib, layout="NHWC"), shape


def _tuned(out: Path, models: Path, name: str, trials: int, time_limit_s: float, target: str):
    """``(qm, input shape, TuneResult, database dir, tuning seconds)`` for one model, or
    a ``{"skipped": why}`` dict when the model file is absent."""
    from tvmq.tune import tune

    if not (models / f"{name}_float32.tflite").exists():
        return {"skipped": f"{models}/{name}_float32.tflite is absent"}
    qm, shape = _quantized(models, name)
    db = out / f"{target.split(':')[0]}_tuning" / name
    t0 = time.time()
    res = tune(qm, db, trials=trials, time_limit_s=time_limit_s, target=target)
    return qm, shape, res, db, time.time() - t0


def _ratio(base: dict, new: dict) -> float | None:
    """sum(base) / sum(new) over the kernels both have a number for."""
    both = [n for n in base if base[n] is not None and new.get(n) is not None]
    return sum(base[n] for n in both) / sum(new[n] for n in both) if both else None


def _tuning_info(res, seconds: float) -> dict:
    return {"trials": sum(t.trials for t in res.tasks.values()), "seconds": round(seconds, 1),
            "interrupted": res.interrupted}  # fmt: skip


def _float_vm(mod, db: Path):
    """The float module built with its tuned schedules (one core)."""
    from tvm import relax

    from tvmq.pipeline import lut_pipeline
    from tvmq.tune import host_target

    target = host_target()
    exe = tvm.compile(mod, target=target, relax_pipeline=lut_pipeline(target, str(db)))
    return relax.VirtualMachine(exe, tvm.cpu())


def _clock(fn, min_s: float = 0.02) -> float:
    """Seconds per call, averaged over enough calls to last ``min_s``."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return dt / n


def _call(f, *args):
    return lambda: f(*args)


def _litert(path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    x = np.zeros(inp["shape"], inp["dtype"])
    it.set_tensor(inp["index"], x)
    return it.invoke


def host(out: Path, models: Path, trials: int, time_limit_s: float, rounds: int = 15) -> dict:
    from tvmq.tune import kernel_times, tune

    results = {}
    for name in MODELS:
        got = _tuned(out, models, name, trials, time_limit_s, "llvm")
        if isinstance(got, dict):
            results[name] = got
            continue
        qm, shape, res, db, tuning_s = got
        float_db = out / "llvm_tuning" / f"{name}_float32"
        t0 = time.time()
        fres = tune(qm.float_module, float_db, trials=trials, time_limit_s=time_limit_s,
                    ops="all")  # fmt: skip
        float_tuning_s = time.time() - t0
        float_tuned = _float_vm(qm.float_module, float_db)
        names = sorted(res.tasks)
        k_default = kernel_times(qm, names=names)
        k_ours = kernel_times(qm, names=names, schedule=True)
        k_tuned = kernel_times(qm, names=names, tuning=db)
        tuned = dataclasses.replace(qm).build(tuning=db)
        qm.build()
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        xt = tvm.runtime.tensor(x)  # every system is timed without its I/O (as LiteRT's invoke)
        systems = {
            "lut_w4a8_tvmq_schedule": _call(qm.vm()["main"], xt),
            "lut_w4a8_tuned": _call(tuned.vm()["main"], xt),
            "tvm_float32_untuned": _call(qm.vm("float")["main"], xt),
            "tvm_float32_tuned": _call(float_tuned["main"], xt),
            "lut_w4a8_run_api": lambda: qm.run(x),  # QuantizedModel.run: checks + copies
        }
        for kind in ("float32", "int8"):
            f = _litert(models / f"{name}_{kind}.tflite")
            if f is not None:
                systems[f"litert_{kind}"] = f
        times = {k: [] for k in systems}
        for _ in range(rounds):
            for k, f in systems.items():
                times[k].append(_clock(f))
        results[name] = {
            "tuning": _tuning_info(res, tuning_s),
            "float_tuning": _tuning_info(fres, float_tuning_s),
            "latency_us": {k: {"min": 1e6 * min(v), "median": 1e6 * statistics.median(v)}
                           for k, v in times.items()},
            "kernels_us": {n: {"te_default": 1e6 * k_default[n], "tvmq": 1e6 * k_ours[n],
                               "tuned": 1e6 * k_tuned[n]} for n in names},
            "kernels_tuned_vs_default": sum(k_default.values()) / sum(k_tuned.values()),
        }  # fmt: skip
    return results


def mcu(out: Path, models: Path, trials: int, time_limit_s: float) -> dict:
    from tvmq.backend.aot import generate_aot
    from tvmq.backend.mcu_measure import measure_kernels
    from tvmq.backend.qemu import run_on_device
    from tvmq.backend.schedule import schedule_mcu
    from tvmq.tune import apply_to_module

    board = "mps2-an386"
    results = {}
    for name in MODELS:
        got = _tuned(out, models, name, trials, time_limit_s, f"qemu:{board}")
        if isinstance(got, dict):
            results[name] = got
            continue
        qm, shape, res, db, tuning_s = got
        fused = qm.fused()
        tuned_mod = apply_to_module(fused, db, f"qemu:{board}")
        names = sorted(res.tasks)
        k = {
            "te_default": measure_kernels(fused, board, names, skip_unprintable=True),
            "tvmq": measure_kernels(schedule_mcu(fused), board, names),
            "tuned": measure_kernels(tuned_mod, board, names),
        }
        xs = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
        before = run_on_device(generate_aot(fused), xs, out / "mcu_dev" / f"{name}_0", board)
        after = run_on_device(generate_aot(tuned_mod), xs, out / "mcu_dev" / f"{name}_1", board)
        same = bool(np.array_equal(before.outputs, after.outputs))
        results[name] = {
            "board": board,
            "tuning": _tuning_info(res, tuning_s),
            "kernels_instructions": {n: {s: k[s][n] for s in k} for n in names},
            "kernels_tuned_vs_default": _ratio(k["te_default"], k["tuned"]),
            "kernels_tuned_vs_tvmq": sum(k["tvmq"].values()) / sum(k["tuned"].values()),
            "model_instructions": {"tvmq_schedule": int(np.median(before.instructions)),
                                   "tuned": int(np.median(after.instructions))},
            "outputs_identical": same,
        }  # fmt: skip
    return results


def host_goals(r: dict) -> list[str]:
    """The tuning issue's host goals for one model's results, met or missed."""
    x = r["kernels_tuned_vs_default"]
    out = [f"- LUT kernels tuned >= 3x TE default: {'met' if x >= 3 else 'missed'} ({x:.2f}x)"]
    lat = r["latency_us"]
    if "litert_float32" in lat and "lut_w4a8_tuned" in lat:
        ratio = lat["lut_w4a8_tuned"]["min"] / lat["litert_float32"]["min"]
        out.append(
            f"- W4 LUT model (tuned) no slower than LiteRT float32: "
            f"{'met' if ratio <= 1 else 'missed'} ({ratio:.2f}x its time)"
        )
    return out


def markdown(res: dict) -> str:
    lines = ["# Tuning", ""]
    for part, title in (("host", "Host (llvm, one core)"), ("mcu", "QEMU mps2-an386")):
        for name, r in res.get(part, {}).items():
            if "skipped" in r:
                lines.append(f"- {title} {name}: skipped ({r['skipped']})")
                continue
            t = r["tuning"]
            lines += ["", f"## {title}: {name} ({t['trials']} trials, {t['seconds']:.0f} s)", ""]
            if part == "host":
                lines += ["| system | min us | median us |", "|---|---:|---:|"]
                lines += [f"| {k} | {v['min']:.1f} | {v['median']:.1f} |"
                          for k, v in r["latency_us"].items()]  # fmt: skip
                lines += ["", "| kernel | TE default us | tvmq us | tuned us |",
                          "|---|---:|---:|---:|"]  # fmt: skip
                lines += [f"| {n} | {v['te_default']:.1f} | {v['tvmq']:.1f} | {v['tuned']:.1f} |"
                          for n, v in r.get("kernels_us", {}).items()]  # fmt: skip
                lines += ["", *host_goals(r)]
            else:
                lines += ["| kernel | TE default | tvmq | tuned |", "|---|---:|---:|---:|"]
                lines += [
                    "| " + " | ".join([n] + ["-" if v[c] is None else f"{v[c]:,}"
                                             for c in ("te_default", "tvmq", "tuned")]) + " |"
                    for n, v in r["kernels_instructions"].items()
                ]  # fmt: skip
                m = r["model_instructions"]
                vs_default = r["kernels_tuned_vs_default"]
                lines.append(
                    f"\nkernels tuned vs TE default (where it prints as C) "
                    f"{'-' if vs_default is None else f'{vs_default:.2f}x'}, vs "
                    f"tvmq's schedule {r['kernels_tuned_vs_tvmq']:.2f}x; whole model "
                    f"{m['tvmq_schedule']:,} -> {m['tuned']:,} instructions "
                    f"(outputs identical: {r['outputs_identical']})"
                )
    return "\n".join(lines) + "\n"
