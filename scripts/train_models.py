"""Train the seed papers' small models on real data and export them as ONNX for tvmq.

Needs the ``train`` extra (``pip install -e ".[train]"``: CPU torch). Seeds are fixed;
each model trains in minutes on two CPU cores. Writes ``models/<name>.onnx`` and
``models/<name>.json`` (float accuracy on the full test set, training settings, input
convention) atomically; the repository ships the results, so nothing here runs at tvmq's
run time or in its tests.

Usage::

    python scripts/train_models.py convnet [--epochs 6]
    python scripts/train_models.py all

Batch norms are folded into the convolutions by the ONNX exporter (eval mode, constant
folding), so the shipped graphs have none; :class:`tvmq.config.PTQConfig` ``fold_bn``
folds them for graphs that keep them.

Models
------
convnet (``fmnist_convnet``)
    The TENT ConvNet (seed 002, Table 1 footnote 4: 3 convolutions, 2 poolings, 1 batch
    norm, 2 fully connected) on Fashion-MNIST: conv3x3(1->32) ReLU maxpool, conv3x3(32->64)
    BN ReLU maxpool, conv3x3(64->64) ReLU, FC(3136->576) ReLU, FC(576->10); 1.87 M
    parameters, as redundant as the paper's 1.88 M model. Input ``(1, 1, 28, 28)``
    float32, pixels / 255.
res8 (``fmnist_res8``)
    Seed 004's Res8 (MLPerf Tiny's ResNet-8, Table 3) on Fashion-MNIST: conv3x3(16) BN
    ReLU, three residual blocks of 16, 32 (stride 2) and 64 (stride 2) channels (conv3x3
    BN ReLU conv3x3 BN, a 1x1 strided conv on the shortcut where the shape changes),
    global average pool, FC(64->10); 78 k parameters. Input as convnet.
dscnn (``fmnist_dscnn``)
    Seed 004's DS-CNN (Table 4) on Fashion-MNIST: conv3x3(64, stride 2) BN ReLU, four
    depthwise-separable blocks (depthwise 3x3 BN ReLU, pointwise 64 BN ReLU), global
    average pool, FC(64->10); 18 k parameters. Input as convnet.
cnn1d (``imu_cnn1d``)
    Seed 004's 1-D CNN for activity recognition (Table 6) on the wrist-IMU data
    (:func:`tvmq.datasets.watch_imu`): conv1d(6->64, 3) ReLU, conv1d(64->64, 3) ReLU,
    maxpool 2, FC(3968->100) ReLU, FC(100->7); 0.41 M parameters. Input
    ``(1, 6, 128)`` float32, standardized channels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tvmq.evaluate import load_split  # noqa: E402
from tvmq.io import atomic_write_bytes, atomic_write_text  # noqa: E402


def convnet():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 576), nn.ReLU(), nn.Linear(576, 10),
    )  # fmt: skip


def res8():
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout),
            )  # fmt: skip
            self.short = (
                nn.Identity() if stride == 1 and cin == cout
                else nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout))
            )  # fmt: skip
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + self.short(x))

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def dscnn():
    import torch.nn as nn

    def ds(c):
        return [
            nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(),
        ]  # fmt: skip

    return nn.Sequential(
        nn.Conv2d(1, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        *ds(64), *ds(64), *ds(64), *ds(64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def cnn1d():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv1d(6, 64, 3), nn.ReLU(), nn.Conv1d(64, 64, 3), nn.ReLU(), nn.Dropout(0.3),
        nn.MaxPool1d(2), nn.Flatten(), nn.Linear(64 * 62, 100), nn.ReLU(), nn.Linear(100, 7),
    )  # fmt: skip


# name: (builder, data set, input shape, file stem, default epochs, input convention)
_IMAGES = "float32 pixels / 255, NCHW"
MODELS = {
    "convnet": (convnet, "fashion-mnist", (1, 1, 28, 28), "fmnist_convnet", 6, _IMAGES),
    "res8": (res8, "fashion-mnist", (1, 1, 28, 28), "fmnist_res8", 8, _IMAGES),
    "dscnn": (dscnn, "fashion-mnist", (1, 1, 28, 28), "fmnist_dscnn", 8, _IMAGES),
    "cnn1d": (
        cnn1d, "watch-imu", (1, 6, 128), "imu_cnn1d", 30,
        "float32 (N, 6, 128) windows, channels standardized (tvmq.datasets.watch_imu)",
    ),
}  # fmt: skip


def _data(name: str):
    xtr, ytr = load_split(name, "train")
    xte, yte = load_split(name, "test")
    return xtr, ytr, xte, yte


def _accuracy(model, x, y, batch=1000) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            pred = model(torch.from_numpy(x[i : i + batch])).argmax(1).numpy()
            correct += int((pred == y[i : i + batch]).sum())
    return correct / len(x)


def train(
    name: str, epochs: int | None = None, seed: int = 0, out_dir: Path = REPO / "models"
) -> dict:
    import io

    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    build, data, in_shape, stem, default_epochs, convention = MODELS[name]
    epochs = epochs or default_epochs
    xtr, ytr, xte, yte = _data(data)
    flips = data == "fashion-mnist"
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (len(xtr) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        order = rng.permutation(len(xtr))
        for i in range(0, len(order) - 127, 128):
            idx = order[i : i + 128]
            xb = torch.from_numpy(xtr[idx])
            if flips and rng.random() < 0.5:  # clothes are left-right symmetric
                xb = xb.flip(-1)
            loss = loss_fn(model(xb), torch.from_numpy(ytr[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"{name} epoch {ep + 1}/{epochs} test acc {_accuracy(model, xte, yte):.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
    acc = _accuracy(model, xte, yte)
    model.eval()
    buf = io.BytesIO()
    torch.onnx.export(
        model, torch.zeros(in_shape), buf, dynamo=False, input_names=["input"],
        output_names=["logits"], opset_version=17, do_constant_folding=True,
    )  # fmt: skip
    meta = {
        "model": name,
        "dataset": data,
        "input_shape": list(in_shape),
        "input": convention,
        "float_accuracy": acc,
        "test_images": len(xte),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "epochs": epochs,
        "seed": seed,
        "torch": torch.__version__,
        "train_seconds": round(time.time() - t0),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / f"{stem}.onnx", buf.getvalue())
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", choices=[*sorted(MODELS), "all"])
    ap.add_argument("--epochs", type=int, default=None, help="default: the model's own")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name in sorted(MODELS) if args.model == "all" else [args.model]:
        print(json.dumps(train(name, args.epochs, args.seed), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
