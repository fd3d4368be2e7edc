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
