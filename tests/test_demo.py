"""The main job's deploy stage on a small, quickly trained model and few images."""

import shutil

import numpy as np
import pytest
from rich.console import Console

from tvmq.datasets import FASHION_MNIST_DIR, fashion_mnist
from tvmq.demo import deploy_stage, mlp_accuracy, train_mlp

pytestmark = [
    pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="dataset-fashion-mnist missing"),
    pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="qemu-system-arm missing"),
]


def test_deploy_stage_reports_device_accuracy_equal_to_host(tmp_path):
    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    xtr = xtr[:6000].reshape(-1, 784).astype(np.float32) / 255
    xte = xte[:500].reshape(-1, 784).astype(np.float32) / 255
    params = train_mlp(xtr, ytr[:6000], hidden=32, epochs=2)
    assert mlp_accuracy(params, xte, yte[:500]) > 70.0  # a real model, not noise
    res = deploy_stage(params, xtr, xte, yte[:500], tmp_path, Console(quiet=True), n_test=40)
    # the stage itself raises if device and host outputs differ bit-wise
    assert abs(res["device_accuracy"] - res["float_accuracy"]) <= 10.0
    assert res["const_bytes"] < 0.3 * sum(p.nbytes for p in params)
    assert res["arena_bytes"] < 4 * 784 and res["instructions_median"] > 784 * 32


def test_convnet_stage_deploys_the_shipped_model(tmp_path):
    """The main job's ConvNet stage on 12 images, without tuning: device == host C (the
    stage raises otherwise), accuracy near float, 4-bit constants far below float32."""
    from tvmq.demo import convnet_stage

    res = convnet_stage(tmp_path, Console(quiet=True), n_test=12, tune_trials=0)
    assert abs(res["device_accuracy"] - res["float_accuracy"]) <= 100 * 2 / 12
    assert res["const_bytes"] < 0.15 * 4 * 1_868_554
    assert len(res["layers"]) >= 5 and res["instructions_median"] > 5e6
