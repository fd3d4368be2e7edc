"""Tutorial 4: autotune LUT kernels and read the tuning log.

Run: ``.venv/bin/python tutorials/04_autotune.py [--fast] [--db DIR]``

tvmq's LUT kernels come with a hand-written schedule; MetaSchedule (TVM's successor of
AutoTVM) can search for better ones, guided by an XGBoost cost model trained on the
measurements as they come in. Everything measured is kept in a JSON database in a
directory you name; building with ``tuning=DIR`` applies the best schedule per kernel, and
tuning again with the same directory continues from it instead of starting over.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from tvm.s_tir import meta_schedule as ms

import tvmq
from tvmq.config import fixed_point
from tvmq.evaluate import calibration_set
from tvmq.tune import kernel_times, tune
from tvmq.zoo import model_path

parser = argparse.ArgumentParser()
parser.add_argument("--fast", action="store_true", help="a handful of trials (tests)")
parser.add_argument("--db", type=Path, default=None, help="tuning directory (kept)")
args = parser.parse_args()
db = args.db or Path(tempfile.mkdtemp(prefix="tvmq-tuning-"))

# 1. A quantized model: the shipped ConvNet, 4-bit k-means weights, int8 activations.
qm = tvmq.quantize(
    model_path("fmnist_convnet"), fixed_point("w4-kmeans-a8"),
    calib=calibration_set("fashion-mnist", 64), layout="NHWC",
)  # fmt: skip

# 2. Tune. `trials` is the total measurement budget over all LUT kernels, `time_limit_s`
#    a wall-clock cap; Ctrl-C also stops early and keeps what was measured. The first
#    tuning run in a process spends ~30 s importing TVM's tensor intrinsics.
#    `kernels=` limits the search to some kernels (--fast: the first convolution only).
trials = 4 if args.fast else 200
res = tune(
    qm,
    db,
    trials=trials,
    time_limit_s=300,
    kernels=["lut_conv_int_requant"] if args.fast else None,
    progress=lambda name, n, best: print(
        f"  {name:40s} trial {n:3d}  best {best * 1e6 if best else float('nan'):8.1f} us"
    ),
)
print(f"\ntuned {len(res.tasks)} kernel(s) with {trials} trials in {res.seconds:.0f} s -> {db}")

# 3. The per-kernel table `tvmq tune` prints: TE's default schedule, tvmq's schedule and the
#    tuned one, each timed on this machine (one core) side by side.
names = sorted(res.tasks)
base = kernel_times(qm, names=names)
ours = kernel_times(qm, names=names, schedule=True)
tuned = kernel_times(qm, names=names, tuning=db)
for n in names:
    print(f"  {n:40s} default {base[n] * 1e6:8.1f} us  tvmq {ours[n] * 1e6:8.1f} us  "
          f"tuned {tuned[n] * 1e6:8.1f} us")  # fmt: skip

# 4. Reading the log. The database is two JSON-lines files: the workloads (one per
#    kernel: its TIR) and the tuning records (a schedule trace + measured seconds).
database = ms.database.JSONDatabase(work_dir=str(db))
records = database.get_all_tuning_records()
print(f"\n{db / 'database_tuning_record.json'}: {len(records)} records")
best = min(records, key=lambda r: min(float(s) for s in r.run_secs))
print(f"fastest candidate: {min(float(s) for s in best.run_secs) * 1e6:.1f} us; its schedule "
      "as the Python that reproduces it (first lines):")  # fmt: skip
print("\n".join(str(best.trace).splitlines()[:8]))
#    MetaSchedule's own log per kernel (search rounds, cost-model updates) is in logs/:
logs = sorted((db / "logs").glob("*.log"))
print(f"\n{len(logs)} task logs in {db / 'logs'}, e.g. {logs[0].name}:" if logs else "")
if logs:
    print("\n".join(logs[0].read_text().splitlines()[-5:]))

# 5. Apply: the tuned build computes exactly what the untuned one does.
x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
same = np.array_equal(qm.build().run(x), qm.build(tuning=db).run(x))
print(f"\ntuned build bit-identical to the untuned one: {same}")
