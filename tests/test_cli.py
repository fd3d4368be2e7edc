"""The CLI as a user runs it: a real subprocess of the installed console script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tvmq

TVMQ = [str(Path(sys.executable).parent / "tvmq")]


def run(*args):
    return subprocess.run(TVMQ + list(args), capture_output=True, text=True, timeout=300)


def test_version_and_help():
    assert run("--version").stdout.strip() == f"tvmq {tvmq.__version__}"
    out = run("--help").stdout
    assert "exit codes" in out and "weights" in out
    assert "example:" in run("weights", "--help").stdout


def test_schemes_json():
    r = run("schemes", "--json")
    assert r.returncode == 0
    info = json.loads(r.stdout)
    assert set(info) >= {"uniform", "quantile", "kmeans", "tfx", "pot", "nf"}
    assert info["kmeans"]["options"]["bits"] == 4


def test_weights_json_on_a_real_model(mlperf_model):
    path = mlperf_model("kws_dscnn_float32.tflite")
    r = run("weights", str(path), "--scheme", "uniform", "kmeans", "--bits", "4", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["scheme"]: row for row in json.loads(r.stdout)}
    assert rows["kmeans"]["sqnr_db"] > rows["uniform"]["sqnr_db"] + 2.0
    assert 20.0 < rows["uniform"]["sqnr_db"] < 30.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["weights", "/etc/hostname"], "not a TFLite model"),
        (["weights", "/nonexistent.tflite"], "cannot read"),
        (["weights", "x.tflite", "--scheme", "magic"], "known schemes"),
        (["weights", "x.tflite", "--bits", "four"], "invalid int"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_user_errors_exit_1_with_one_line(args, message):
    r = run(*args)
    assert r.returncode == 1
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_deploy_on_host_reports_agreement(tmp_path):
    import onnx
    from test_quantize_e2e import onnx_model

    path = tmp_path / "m.onnx"
    onnx.save(onnx_model(), path)
    r = run("deploy", str(path), "--board", "host", "--samples", "3", "--json",
            "--project-dir", str(tmp_path / "proj"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["top1_agreement_with_host"] == 1.0 and report["max_abs_diff_vs_host"] < 1e-5
    assert report["arena_bytes"] > 0 and report["accuracy"] is None
    # the binary's sizes come from the project's build step
    assert report["ram_bytes"] >= report["arena_bytes"]
    assert report["flash_bytes"] >= report["const_bytes"]
    r = run("deploy", str(path), "--config", "w4-kmeans", "--fixed-point")
    assert r.returncode == 1 and "--fixed-point needs" in r.stderr


def test_tune_rejects_a_zero_budget_before_any_work(tmp_path):
    r = run("tune", "missing.onnx", "--db", str(tmp_path / "db"), "--trials", "0")
    assert r.returncode == 1 and "--trials must be at least 1" in r.stderr
    r = run("tune", "--help")
    assert r.returncode == 0 and "example: tvmq tune" in r.stdout


def test_inspect_counts_layers_params_and_macs():
    from tvmq import zoo

    r = run("inspect", str(zoo.model_path("fmnist_convnet")), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout)
    kinds = [x["kind"] for x in info["layers"]]
    assert kinds == ["conv2d", "conv2d", "conv2d", "dense", "dense"]
    assert info["params"] == 1_867_680  # weights only (biases and batch norm excluded)
    # conv2: 14x14 outputs x 64 channels x (32x3x3) taps
    assert info["layers"][1]["macs"] == 14 * 14 * 64 * 32 * 9
    assert info["peak_op_bytes"] >= 4 * 32 * 28 * 28
    r = run("inspect", "no-such-model.onnx")
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_eval_reports_float_and_quantized_accuracy_on_real_data():
    from tvmq import zoo

    r = run("eval", str(zoo.model_path("fmnist_convnet")), "--config", "w4-uniform",
            "--samples", "20", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["samples"] == 20 and rep["float_accuracy"] >= 0.75
    assert abs(rep["drop_points"]) <= 15  # 4-bit uniform weights, activations float
    r = run("eval", str(zoo.model_path("fmnist_convnet")), "--samples", "0")
    assert r.returncode == 1 and "--samples must be at least 1" in r.stderr


def test_eval_with_the_ptq_pipeline_and_a_weight_budget_on_imu_data():
    from tvmq import zoo

    r = run("eval", str(zoo.model_path("imu_cnn1d")), "--config", "w2-kmeans-a8",
            "--data", "watch-imu", "--samples", "200", "--ptq", "--weight-budget", "150000",
            "--calib-samples", "32", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["samples"] == 200 and rep["float_accuracy"] > 0.7
    assert abs(rep["drop_points"]) <= 10
