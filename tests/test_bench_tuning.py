"""The tuning benchmark's report from a results dict of the shape ``bench_tuning.host``
writes (the tuning itself runs in ``make bench``)."""

from benchmarks import bench_tuning as b


def test_host_report_judges_the_goals():
    r = {
        "tuning": {"trials": 32, "seconds": 60.0, "interrupted": False},
        "latency_us": {
            "lut_w4a8_tuned": {"min": 90.0, "median": 95.0},
            "litert_float32": {"min": 45.0, "median": 46.0},
        },
        "kernels_us": {"lut_conv_int_requant": {"te_default": 30.0, "tvmq": 9.0, "tuned": 9.0}},
        "kernels_tuned_vs_default": 3.33,
    }
    assert b.host_goals(r) == [
        "- LUT kernels tuned >= 3x TE default: met (3.33x)",
        "- W4 LUT model (tuned) no slower than LiteRT float32: missed (2.00x its time)",
    ]
    md = b.markdown({"host": {"kws_dscnn": r}})
    assert "| lut_conv_int_requant | 30.0 | 9.0 | 9.0 |" in md
    assert "| lut_w4a8_tuned | 90.0 | 95.0 |" in md
