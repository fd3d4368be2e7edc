"""The device benchmark's report: the deployment issue's targets read from its results."""

from benchmarks.bench_device import TFLM, markdown, targets


def _row(config, instructions, weight_bytes, arena=16_000):
    return {
        "config": config, "instructions": instructions, "flash_bytes": 40_000,
        "ram_bytes": 18_000, "arena_bytes": arena, "stack_bytes": 700,
        "const_bytes": weight_bytes + 8_000, "weight_bytes": weight_bytes,
        "int8_weight_bytes": 22_016,
    }  # fmt: skip


def test_targets_are_judged_against_tflm_and_our_int8_baseline():
    res = {
        "board": "mps2-an386",
        "tflm_reference": TFLM,
        "models": {
            "kws_dscnn_float32": [
                _row("w8-uniform-a8 (fixed-point)", 5_380_000, 24_586),
                _row("w4-kmeans-a8 (fixed-point)", 5_410_000, 18_634),
                _row("w4-kmeans-shared-a8 (fixed-point)", 5_320_000, 11_178),
                _row("w2-kmeans-a8 (fixed-point)", 6_300_000, 7_866, arena=30_000),
            ]
        },
    }
    got = targets(res)["kws_dscnn_float32"]
    assert set(got) == {"w4-kmeans-a8 (fixed-point)", "w4-kmeans-shared-a8 (fixed-point)"}
    assert got["w4-kmeans-shared-a8 (fixed-point)"] == dict.fromkeys(
        ("instructions", "arena", "flash", "vs_int8"), True
    )
    per_channel = got["w4-kmeans-a8 (fixed-point)"]
    assert per_channel["instructions"] and per_channel["arena"]  # 5.41 M <= 6.16 M
    assert not per_channel["flash"] and not per_channel["vs_int8"]  # 0.85x; 5.41 > 5.38 M
    md = markdown(res)
    assert "- w4-kmeans-a8 (fixed-point): instructions met, arena met, flash missed" in md
    assert "w2-kmeans" not in md.split("Targets")[1]  # the targets are for W4A8
