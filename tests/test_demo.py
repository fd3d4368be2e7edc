"""The main job's deploy stage: the shipped ConvNet on a few real test images."""

import shutil

import pytest
from rich.console import Console

from tvmq.datasets import FASHION_MNIST_DIR

pytestmark = [
    pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="dataset-fashion-mnist missing"),
    pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="qemu-system-arm missing"),
]


def test_convnet_stage_deploys_the_shipped_model(tmp_path):
    """The main job's ConvNet stage on 12 images, without tuning: device == host C (the
    stage raises otherwise), accuracy near float, 4-bit constants far below float32."""
    from tvmq.demo import convnet_stage

    res = convnet_stage(tmp_path, Console(quiet=True), n_test=12, tune_trials=0)
    assert abs(res["device_accuracy"] - res["float_accuracy"]) <= 100 * 2 / 12
    assert res["const_bytes"] < 0.15 * 4 * 1_868_554
    assert len(res["layers"]) >= 5 and res["instructions_median"] > 5e6
    # the main job leaves an artifact that loads and a report whose plots exist
    import tvmq

    assert tvmq.load_artifact(res["artifact"]).layout == "NHWC"
    report = (tmp_path / "report" / "report.md").read_text()
    assert "on 12 fashion-mnist test samples" in report and "weights.png" in report
