"""Tutorial 3: from PyTorch ``torch.export`` to a Cortex-M4 in QEMU.

Run: ``.venv/bin/python tutorials/03_torch_to_cortex_m.py [--fast]`` (needs the ``train``
extra: ``pip install -e .[train]``; the deployed model never needs torch).

Steps: train a small CNN on Fashion-MNIST for a minute on the CPU, export it with
``torch.export``, quantize weights to 4-bit k-means codebooks and activations to int8
(fixed-point epilogues, channels-last), generate plain C with a static arena, and run it
on an emulated Cortex-M4 (QEMU ``mps2-an386``) through tvmq's Project API. The device
counts instructions per inference exactly (``-icount`` + SysTick).
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import tvmq
from tvmq.backend.aot import generate_aot
from tvmq.config import fixed_point
from tvmq.evaluate import calibration_set, load_split
from tvmq.micro import Session

parser = argparse.ArgumentParser()
parser.add_argument("--fast", action="store_true", help="short training, few images (tests)")
args = parser.parse_args()
try:
    import torch
except ImportError:
    sys.exit("this tutorial needs PyTorch: .venv/bin/pip install -e '.[train]'")

# 1. Train (seeded, CPU). Any nn.Module works; conv2d, depthwise, linear get quantized.
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, 10),
)  # fmt: skip
x_train, y_train = load_split("fashion-mnist", "train")
steps = 150 if args.fast else 1500
opt = torch.optim.Adam(net.parameters(), 2e-3)
rng = np.random.default_rng(0)
for _ in range(steps):
    idx = rng.choice(len(x_train), 64, replace=False)
    loss = torch.nn.functional.cross_entropy(
        net(torch.from_numpy(x_train[idx])), torch.from_numpy(y_train[idx])
    )
    opt.zero_grad()
    loss.backward()
    opt.step()
net.eval()

# 2. Export and quantize. Calibration uses train images, never test images.
program = torch.export.export(net, (torch.zeros(1, 1, 28, 28),))
qm = tvmq.quantize(
    program, fixed_point("w4-kmeans-a8"), calib=calibration_set("fashion-mnist", 128),
    layout="NHWC",
)  # fmt: skip
for layer in qm.layers:
    print(f"{layer.name:16s} {layer.scheme} W{layer.bits}  weight SQNR {layer.sqnr_db:.1f} dB")

# 3. Plain C + static arena, then the device. Session = generate project, build with
#    arm-none-eabi-gcc, start QEMU, talk to it over its console.
aot = generate_aot(qm.fused())
print(f"constants {aot.const_bytes} B, activation arena {aot.arena_bytes} B")
n = 20 if args.fast else 200
x_test, y_test = load_split("fashion-mnist", "test")
project = Path(tempfile.mkdtemp(prefix="tvmq-tutorial3-")) / "project"
with Session(aot, board="mps2-an386", project_dir=project) as dev:
    results = [dev.run(x[None]) for x in x_test[:n]]
device_top1 = np.array([out.reshape(-1).argmax() for out, _ in results])
with torch.no_grad():
    torch_top1 = net(torch.from_numpy(x_test[:n])).argmax(1).numpy()
print(f"\n{n} test images on the emulated Cortex-M4:")
print(f"  accuracy: torch float {100 * np.mean(torch_top1 == y_test[:n]):.1f} %, "
      f"device W4A8 {100 * np.mean(device_top1 == y_test[:n]):.1f} %")  # fmt: skip
print(f"  instructions per inference: {int(np.median([c for _, c in results])):,}")
host = np.stack([qm.build().run(x[None]) for x in x_test[:n]])
same = np.array_equal(host.reshape(n, -1), np.stack([o.reshape(-1) for o, _ in results]))
print(f"  device outputs equal the host TVM build bit for bit: {same}")
print(f"  project (sources, binary): {project}")
