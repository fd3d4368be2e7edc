"""The artifact workflow from the CLI: ``tvmq quantize -o`` once, then eval / deploy / report
read the ``.tvmq`` file; bad input exits 1 with one line and writes nothing."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_cli import run
from test_quantize_e2e import onnx_model

import tvmq


def template_mlp() -> onnx.ModelProto:
    """A 784-10-10 Fashion-MNIST classifier without training: layer 1 is the nearest class
    mean of the train split (x.m - |m|^2/2; 67.7 % on the test set), layer 2 a noisy
    identity."""
    from tvmq.datasets import fashion_mnist

    x, y = fashion_mnist("train")
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    w1 = means.T.astype(np.float32)  # (784, 10)
    b1 = (-0.5 * (means**2).sum(1)).astype(np.float32)
    w2 = (np.eye(10) + 0.01 * np.random.default_rng(0).standard_normal((10, 10))).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("MatMul", ["f", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["s"]),
        helper.make_node("MatMul", ["s", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "template_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def conv_artifact(tmp_path_factory):
    """A W4A8 fixed-point artifact of the small conv model, calibrated from a .npy file."""
    d = tmp_path_factory.mktemp("cli_art")
    onnx.save(onnx_model(), d / "m.onnx")
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((16, 1, 3, 12, 12)))
    r = run("quantize", str(d / "m.onnx"), "--config", "w4-kmeans-a8", "--fixed-point",
            "--calib", str(d / "calib.npy"), "--per-layer", "layer2_*:bits=8",
            "-o", str(d / "m.tvmq"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return d, json.loads(r.stdout)


def test_quantize_reports_layers_and_overrides(conv_artifact):
    d, info = conv_artifact
    assert info["artifact"] == str(d / "m.tvmq") and info["bytes"] > 0
    bits = {layer["name"]: layer["bits"] for layer in info["layers"]}
    assert bits == {"layer0_conv2d": 4, "layer1_depthwise": 4, "layer2_dense": 8}
    assert info["config"]["activation"]["requantize"] == "fixed"


def test_deploy_reads_the_artifact(conv_artifact, tmp_path):
    d, _ = conv_artifact
    r = run("deploy", str(d / "m.tvmq"), "--board", "host", "--samples", "3", "--json",
            "--project-dir", str(tmp_path / "proj"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["top1_agreement_with_host"] == 1.0 and rep["max_abs_diff_vs_host"] == 0.0
    assert rep["config"]["activation"]["requantize"] == "fixed"


def test_report_has_table_and_plots(conv_artifact, tmp_path):
    d, _ = conv_artifact
    out = tmp_path / "rep"
    r = run("report", str(d / "m.tvmq"), "-o", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    md = (out / "report.md").read_text()
    assert "| layer2_dense | dense |" in md and "activation arena" in md
    for png in ("layers.png", "weights.png", "memory.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_eval_and_accuracy_curve_on_fashion_mnist(tmp_path):
    onnx.save(template_mlp(), tmp_path / "mlp.onnx")
    r = run("quantize", str(tmp_path / "mlp.onnx"), "--config", "w4-kmeans",
            "-o", str(tmp_path / "mlp.tvmq"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    r = run("eval", str(tmp_path / "mlp.tvmq"), "--samples", "300", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads(r.stdout)
    assert ev["float_accuracy"] > 0.5  # the templates classify; quantizing keeps most of it
    assert abs(ev["drop_points"]) <= 10
    r = run("report", str(tmp_path / "mlp.tvmq"), "-o", str(tmp_path / "rep"), "--json",
            "--data", "fashion-mnist", "--samples", "200", "--curve-bits", "2", "4")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert [(c["scheme"], c["bits"]) for c in rep["curve"]] == [
        ("kmeans", 2), ("kmeans", 4), ("uniform", 2), ("uniform", 4)
    ]  # fmt: skip
    acc = {(c["scheme"], c["bits"]): c["accuracy"] for c in rep["curve"]}
    assert acc["kmeans", 4] >= acc["kmeans", 2] - 0.05
    assert (tmp_path / "rep" / "accuracy.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calib", "{d}/bad.npy"], "calibration data must be (N, *"),
        ([], "pass --calib"),
        (["--calib", "{d}/m.onnx"], "--calib takes fashion-mnist, watch-imu"),
        (["--calib", "random", "--per-layer", "layer0"], "--per-layer takes PATTERN:"),
        (["--calib", "random", "--per-layer", "*:bits=11"], "bits"),
        (["--calib", "random", "-o", "{d}"], "is a directory"),
    ],
)
def test_quantize_user_errors(tmp_path, args, message):
    d = tmp_path
    onnx.save(onnx_model(), d / "m.onnx")
    np.save(d / "bad.npy", np.zeros((4, 3, 12, 13), np.float32))
    args = [a.format(d=d) for a in args]
    if "-o" not in args:
        args += ["-o", str(d / "out.tvmq")]
    r = run("quantize", str(d / "m.onnx"), "--config", "w4-kmeans-a8", *args)
    assert r.returncode == 1, r.stderr[-2000:]
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (d / "out.tvmq").exists()
    assert sorted(p.name for p in d.iterdir()) == ["bad.npy", "m.onnx"]  # no temporaries


def test_artifact_user_errors(conv_artifact, tmp_path):
    d, _ = conv_artifact
    r = run("eval", str(d / "m.tvmq"), "--config", "w2-kmeans")
    assert r.returncode == 1 and "is a quantized artifact" in r.stderr
    r = run("quantize", str(d / "m.tvmq"), "-o", str(tmp_path / "x.tvmq"))
    assert r.returncode == 1 and "already a quantized artifact" in r.stderr
    broken = tmp_path / "broken.tvmq"
    broken.write_bytes((d / "m.tvmq").read_bytes()[:5000])
    r = run("deploy", str(broken), "--board", "host")
    assert r.returncode == 1 and "tvmq: error:" in r.stderr and "Traceback" not in r.stderr
    r = run("report", str(d / "m.tvmq"), "-o", str(tmp_path / "r"), "--curve-bits", "2")
    assert r.returncode == 1 and "--curve-bits needs labelled test data" in r.stderr


def test_bench_passes_its_arguments_to_the_suite():
    r = run("bench", "--help")
    assert r.returncode == 0 and "--only" in r.stdout and "bench_results" in r.stdout


def test_deploy_generates_a_zephyr_project_without_zephyr(conv_artifact, tmp_path):
    import os

    d, _ = conv_artifact
    env = {k: v for k, v in os.environ.items() if k != "ZEPHYR_BASE"}
    import subprocess

    from test_cli import TVMQ

    r = subprocess.run(
        [*TVMQ, "deploy", str(d / "m.tvmq"), "--platform", "zephyr", "--board", "nucleo_l4r5zi",
         "--project-dir", str(tmp_path / "z"), "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["built"] is False and "west build -b nucleo_l4r5zi" in rep["next_step"]
    assert (tmp_path / "z" / "CMakeLists.txt").exists()
    assert (tmp_path / "z" / "model" / "tvmq_model.c").exists()
    r = run("deploy", str(d / "m.tvmq"), "--platform", "zephyr", "--board", "mps2-an386")
    assert r.returncode == 1 and "is a qemu board, not zephyr" in r.stderr


qemu = pytest.mark.skipif(
    not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
    reason="needs qemu-system-arm and gcc-arm-none-eabi",
)


@qemu
def test_qemu_cost_is_deterministic_and_ranks_schedules(conv_artifact):
    """The MCU tuning cost: the same kernel measures the same twice; TE's default schedule
    (decode materialized, no loop order for the MCU) costs more than tvmq's schedule."""
    import tvmq
    from tvmq.backend.mcu_measure import measure_kernels
    from tvmq.backend.schedule import schedule_mcu

    d, _ = conv_artifact
    fused = tvmq.load_artifact(d / "m.tvmq").fused()
    names = ["lut_conv_int_requant"]
    a = measure_kernels(fused, "mps2-an386", names)
    assert a == measure_kernels(fused, "mps2-an386", names)
    ours = measure_kernels(schedule_mcu(fused), "mps2-an386", names)
    assert 0 < ours[names[0]] < a[names[0]]


@qemu
def test_qemu_runner_costs_candidates_like_metaschedule_sees_them(conv_artifact):
    """The Builder/Runner pair MetaSchedule calls: identical candidates cost the same,
    the TE default schedule costs more than tvmq's, a candidate that cannot become C is a
    build error (not a crash)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    import tvmq
    from tvmq.backend.mcu_measure import mcu_target, qemu_builder_runner
    from tvmq.backend.schedule import schedule_mcu

    d, _ = conv_artifact
    fused = tvmq.load_artifact(d / "m.tvmq").fused()
    target = mcu_target("mps2-an386")
    name = "lut_conv_int_requant"
    mods = [tvm.IRModule({"main": m[name]}) for m in (fused, schedule_mcu(fused), fused)]
    builder, runner = qemu_builder_runner("mps2-an386")
    built = builder.build([ms.builder.BuilderInput(m, target) for m in mods])
    assert all(b.error_msg is None for b in built)
    args = ms.arg_info.ArgInfo.from_prim_func(mods[0]["main"])
    futures = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", args) for b in built])
    default, ours, again = (float(f.result().run_secs[0]) for f in futures)
    assert default == again and ours < default
    bad = builder.build([ms.builder.BuilderInput(tvm.IRModule({}), target)])
    assert bad[0].artifact_path is None and "PrimFunc" in bad[0].error_msg


@qemu
def test_tune_on_qemu_then_deploy_the_tuned_c(conv_artifact, tmp_path):
    d, _ = conv_artifact
    db = tmp_path / "db"
    r = run("tune", str(d / "m.tvmq"), "--target", "qemu:mps2-an386", "--trials", "4",
            "--kernel", "lut_conv_int_requant", "--db", str(db), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    (row,) = rep["kernels"]
    assert row["unit"] == "instructions" and row["trials"] == 4
    # tvmq's schedule is measured and recorded first (not counted in the trials), so the
    # database never applies anything slower (costs are exact, to one 40-instruction tick)
    assert 0 < row["tuned"] <= row["tvmq_schedule"] + 40
    r = run("deploy", str(d / "m.tvmq"), "--board", "mps2-an386", "--tuning", str(db),
            "--samples", "2", "--json", "--project-dir", str(tmp_path / "p"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    dep = json.loads(r.stdout)
    assert dep["top1_agreement_with_host"] == 1.0 and dep["max_abs_diff_vs_host"] == 0.0
    r = run("tune", str(d / "m.tvmq"), "--target", "qemu:esp32", "--db", str(db))
    assert r.returncode == 1 and "known boards" in r.stderr


def test_quantize_with_kmeans_activation_levels(tmp_path):
    """``--activation-levels kmeans`` stores snap tables in the artifact, which runs from
    them as it was quantized; ``--input-bits`` reaches the config (a bad width: a clear
    error, no artifact)."""
    from relay_passes.calibrate import _quantize_sites
    from tvmq.ops import act_snap

    onnx.save(onnx_model(), tmp_path / "m.onnx")
    calib = np.random.default_rng(0).standard_normal((16, 1, 3, 12, 12)).astype(np.float32)
    np.save(tmp_path / "calib.npy", calib)
    r = run("quantize", str(tmp_path / "m.onnx"), "--config", "w4-kmeans-a4",
            "--activation-levels", "kmeans", "--input-bits", "8",
            "--calib", str(tmp_path / "calib.npy"), "-o", str(tmp_path / "m.tvmq"),
            "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    act = json.loads(r.stdout)["config"]["activation"]
    assert act["scheme"] == "kmeans" and act["input_bits"] == 8
    qm = tvmq.load_artifact(tmp_path / "m.tvmq")
    snaps = [act_snap(s) for s in _quantize_sites(qm.annotated["main"])[0]]
    assert len(snaps) > 1 and snaps[0] is None  # the input layer at 8 bits: no levels
    assert all(s is not None and len(np.unique(s)) <= 16 for s in snaps[1:])
    r = run("quantize", str(tmp_path / "m.onnx"), "--config", "w4-kmeans",
            "--activation-levels", "kmeans", "-o", str(tmp_path / "x.tvmq"))  # fmt: skip
    assert r.returncode == 1 and "--activation-levels needs" in r.stderr
    r = run("quantize", str(tmp_path / "m.onnx"), "--config", "w4-kmeans-a4",
            "--input-bits", "9", "--calib", str(tmp_path / "calib.npy"),
            "-o", str(tmp_path / "x.tvmq"))  # fmt: skip
    assert r.returncode == 1 and "bits" in r.stderr and "9" in r.stderr, r.stderr[-500:]
    r = run("quantize", str(tmp_path / "m.onnx"), "--config", "w4-kmeans", "--range-search",
            "-o", str(tmp_path / "x.tvmq"))  # fmt: skip
    assert r.returncode == 1 and "range_search needs quantized activations" in r.stderr
    assert not (tmp_path / "x.tvmq").exists()
