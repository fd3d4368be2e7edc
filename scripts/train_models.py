"""Train the seed papers' small models on real data and export them as ONNX for tvmq.

Needs the ``train`` extra (``pip install -e ".[train]"``: CPU torch). Seeds are fixed;
each model trains in minutes on two CPU cores. Writes ``models/<name>.onnx`` and
``models/<name>.json`` (float accuracy on the full test set, training settings, input
convention) atomically; the repository ships the results, so nothing here runs at tvmq's
run time or in its tests.

Usage::

    python scripts/train_models.py convnet [--epochs 6]

Models
------
convnet
    The TENT ConvNet (seed 002, Table 1 footnote 4: 3 convolutions, 2 poolings, 1 batch
    norm, 2 fully connected) on Fashion-MNIST: conv3x3(1->32) ReLU maxpool, conv3x3(32->64)
    BN ReLU maxpool, conv3x3(64->64) ReLU, FC(3136->576) ReLU, FC(576->10); 1.87 M
    parameters, as redundant as the paper's 1.88 M model. Input ``(1, 1, 28, 28)``
    float32, pixels / 255.
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

from tvmq.datasets import fashion_mnist  # noqa: E402
from tvmq.io import atomic_write_bytes, atomic_write_text  # noqa: E402


def convnet():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 576), nn.ReLU(), nn.Linear(576, 10),
    )  # fmt: skip


MODELS = {"convnet": (convnet, "fashion-mnist", (1, 1, 28, 28))}


def _data(name: str):
    if name == "fashion-mnist":
        xtr, ytr = fashion_mnist("train")
        xte, yte = fashion_mnist("test")
        f = lambda x: (x.astype(np.float32) / 255.0)[:, None]  # noqa: E731
        return f(xtr), ytr.astype(np.int64), f(xte), yte.astype(np.int64)
    raise SystemExit(f"unknown data set {name}")


def _accuracy(model, x, y, batch=1000) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            pred = model(torch.from_numpy(x[i : i + batch])).argmax(1).numpy()
            correct += int((pred == y[i : i + batch]).sum())
    return correct / len(x)


def train(name: str, epochs: int, seed: int = 0, out_dir: Path = REPO / "models") -> dict:
    import io

    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    build, data, in_shape = MODELS[name]
    xtr, ytr, xte, yte = _data(data)
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
            if rng.random() < 0.5:  # horizontal flips: clothes are left-right symmetric
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
        "input": "float32 pixels / 255, NCHW",
        "float_accuracy": acc,
        "test_images": len(xte),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "epochs": epochs,
        "seed": seed,
        "torch": torch.__version__,
        "train_seconds": round(time.time() - t0),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / f"fmnist_{name}.onnx", buf.getvalue())
    atomic_write_text(out_dir / f"fmnist_{name}.json", json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(json.dumps(train(args.model, args.epochs, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
