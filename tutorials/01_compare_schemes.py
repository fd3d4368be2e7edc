"""Tutorial 1: quantize your first model (ONNX) and compare schemes.

Run: ``.venv/bin/python tutorials/01_compare_schemes.py [--fast]``

Uniform quantization spreads its levels evenly over the range; trained weights are
bell-shaped, so most of them share a few central levels while outer levels sit almost
unused. Non-linear schemes put levels where the values are. This script fits every
registered scheme to the weights of the MLPerf Tiny keyword-spotting model and prints the
signal-to-quantization-noise ratio (higher is better) and the storage cost, then
quantizes the shipped ONNX ConvNet whole and compares accuracy on real test images (on a
model this redundant, 3-bit weights alone cost little with either scheme: the differences
show at 2 bits and with quantized activations, see `make bench`).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

import tvmq
from tvmq.frontend import read_tflite_weights

MODEL = Path(__file__).resolve().parents[2] / "shared/models/mlperf_tiny/kws_dscnn_float32.tflite"

parser = argparse.ArgumentParser()
parser.add_argument("--fast", action="store_true", help="one bit width only (used by tests)")
parser.add_argument("--model", type=Path, default=MODEL)
args = parser.parse_args()

# 1. Real weights. Without the shared models, fall back to a Laplacian sample, which is
#    what trained weights look like.
if args.model.exists():
    layers = read_tflite_weights(args.model)
    w = layers[2].weight  # a 64x64 pointwise convolution, OHWI
    axis = layers[2].channel_axis
    print(f"{layers[2].name}: shape {w.shape}")
else:
    w = np.random.default_rng(0).laplace(scale=0.1, size=(64, 1, 1, 64)).astype(np.float32)
    axis = 0
    print("shared models absent: using a Laplacian sample of shape", w.shape)

# 2. Fit each scheme per output channel. `tvmq.fit(values, scheme, **options)` returns a
#    Codebook: sorted levels per channel plus the rule that maps a value to a code.
for bits in [4] if args.fast else [2, 3, 4]:
    print(f"\n{bits}-bit weights, one codebook per output channel")
    for scheme in tvmq.list_schemes():
        cb = tvmq.fit(w, scheme, bits=bits, axis=axis)
        codes = cb.encode(w)  # uint8 codes, same shape as w
        packed = tvmq.pack(codes, bits)  # the bytes a microcontroller would store
        size = cb.storage_bytes(w.size)
        print(
            f"  {scheme:9s} SQNR {tvmq.sqnr_db(w, cb.decode(codes)):5.1f} dB   "
            f"{packed.nbytes} B codes + {size['codebook']} B codebooks "
            f"= {size['bits_per_weight']:.2f} bits/weight"
        )

# 3. A codebook serializes to JSON next to the model and comes back bit-exact.
cb = tvmq.fit(w, "kmeans", bits=4, axis=axis)
again = tvmq.Codebook.from_dict(cb.to_dict())
assert np.array_equal(again.encode(w), cb.encode(w))
print("\nk-means codebook round-trips through to_dict/from_dict")

# 4. A whole ONNX model: `tvmq.quantize` imports it into TVM, replaces every conv / dense
#    weight with packed codes + codebooks (a `quant.lut_decode` call in the Relax IR) and
#    builds LUT kernels. Compare schemes where it counts: accuracy on real test images.
from tvmq.evaluate import accuracy, load_split  # noqa: E402
from tvmq.zoo import model_path  # noqa: E402

onnx_path = model_path("fmnist_convnet")  # TENT's ConvNet, trained by scripts/
model = tvmq.load_model(onnx_path)
n = 200 if args.fast else 2000
x, y = load_split("fashion-mnist", "test")
x, y = x[:n], y[:n]
print(f"\n{onnx_path.name}, 3-bit weights, accuracy on {n} Fashion-MNIST test images:")
for preset in ("uniform", "kmeans"):
    qm = tvmq.quantize(model, tvmq.QuantConfig(weight={"scheme": preset, "bits": 3})).build()
    kib = qm.report()["quant_weight_bytes"] / 1024
    print(f"  {preset:8s} accuracy {100 * accuracy(qm.run, x, y):.1f} %  ({kib:.0f} KiB weights)")
print(f"  float    accuracy {100 * accuracy(qm.run_float, x, y):.1f} %")
# Save it for the CLI (tvmq eval / deploy / report read .tvmq artifacts):
print(f"artifact: {qm.save(Path(tempfile.mkdtemp()) / 'convnet_w3_kmeans.tvmq')}")
