"""Tutorial 5: generate a Zephyr project for a real board.

Run: ``.venv/bin/python tutorials/05_zephyr_project.py [--fast] [--board nucleo_l4r5zi]``

tvmq's Project API (``micro_project/``, the protocol microTVM used: JSON-RPC 2.0 over a
pipe) generates a complete Zephyr application around the model's plain C: CMakeLists.txt,
prj.conf, a per-board config and overlay, and a ``main.c`` that answers inference requests
on the console. Where Zephyr and its SDK are installed (``ZEPHYR_BASE`` set, ``west`` on
PATH) the same API builds and flashes it; elsewhere you get the project to take there.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import tvmq
from tvmq.backend.aot import generate_aot
from tvmq.config import fixed_point
from tvmq.evaluate import calibration_set
from tvmq.micro import ProjectAPIClient, boards, generate_project
from tvmq.zoo import model_path

parser = argparse.ArgumentParser()
parser.add_argument("--fast", action="store_true", help="fewer calibration images (tests)")
parser.add_argument("--board", default="nucleo_l4r5zi", help="a Zephyr board of boards.json")
parser.add_argument("--project-dir", type=Path, default=None)
args = parser.parse_args()

zephyr_boards = [b for b, o in boards().items() if o["platform"] == "zephyr"]
print(f"Zephyr boards the template knows: {', '.join(zephyr_boards)}")

# 1. The model: the shipped ConvNet, 4-bit weights, int8 activations, integer-only
#    epilogues (the STM32L4R5's M4F has an FPU, but fixed point is faster and smaller).
qm = tvmq.quantize(
    model_path("fmnist_convnet"), fixed_point("w4-kmeans-a8"),
    calib=calibration_set("fashion-mnist", 32 if args.fast else 256), layout="NHWC",
)  # fmt: skip
aot = generate_aot(qm.fused())
print(f"model: {aot.const_bytes / 1024:.0f} KiB constants (flash), "
      f"{aot.arena_bytes / 1024:.1f} KiB arena (RAM)")  # fmt: skip

# 2. Generate the project (same call `tvmq deploy --platform zephyr` makes).
project = args.project_dir or Path(tempfile.mkdtemp(prefix="tvmq-zephyr-")) / args.board
generate_project(aot, args.board, project)
print(f"\n{project}:")
for p in sorted(project.rglob("*")):
    if p.is_file() and "__pycache__" not in p.parts:
        print(f"  {p.relative_to(project)}  ({p.stat().st_size:,} B)")

# 3. The board's entry in boards.json: its core and the compiler flags for it.
info = json.loads((project / "boards.json").read_text())[args.board]
print(f"\nboard options: {info}")

# 4. The model sources are plain C99 with no runtime: check they compile for the board's
#    core with the cross compiler (what west would do first). Zephyr brings its own C
#    library; here picolibc's headers (Debian's picolibc-arm-none-eabi) stand in for it.
if shutil.which("arm-none-eabi-gcc"):
    obj = project / "tvmq_model.o"
    subprocess.run(
        ["arm-none-eabi-gcc", "--specs=picolibc.specs", "-O2", "-std=c99", "-Wall", "-Werror",
         *info["cflags"], "-c",
         "-I", str(project / "model"), str(project / "model" / "tvmq_model.c"), "-o", str(obj)],
        check=True,
    )  # fmt: skip
    size = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True)
    print("model object for the board's core (text/data/bss):\n" + size.stdout)
    obj.unlink()

# 5. Build and flash through the Project API where Zephyr is installed.
api = ProjectAPIClient(project)
try:
    if os.environ.get("ZEPHYR_BASE"):
        print(api.call("build", options={"board": args.board}))
        print("flash with: west flash -d", project / "build")
    else:
        try:
            api.call("build", options={"board": args.board})
        except tvmq.TvmqError as exc:
            print(f"build here: {exc}")
        print(f"next: on a machine with Zephyr: west build -b {args.board} {project}; west flash")
finally:
    api.close()
