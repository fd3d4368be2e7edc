"""The accuracy benchmark's report (Markdown and plot) from a results dict of the shape
``benchmarks.bench_accuracy.run`` writes; the grid itself runs in ``make bench``."""

import pytest

from benchmarks import bench_accuracy as b


def _row(scheme, wb, ab, ptq, acc, gran="channel"):
    return {"scheme": scheme, "w_bits": wb, "a_bits": ab, "ptq": ptq, "granularity": gran,
            "accuracy": acc, "drop_points": 100 * (0.93 - acc), "stderr_points": 0.57,
            "weight_bytes": 4096, "bits_per_weight": 4.2, "layer_bits": [wb, wb]}  # fmt: skip


def test_markdown_and_plot_of_a_results_dict(tmp_path):
    rows = [_row(s, wb, ab, p, 0.92 - 0.01 * (8 - wb))
            for s, wb, ab, p, _ in b.GRID_FAST]  # fmt: skip
    rows.append({**_row("tfx", 2, 2, False, 0.0), "error": "ConfigError: no 2-bit TFX"})
    tent = [_row(s, wb, ab, p, 0.925, g) for s, wb, ab, p, g in b.TENT_ROWS]
    results = {
        "fast": True,
        "ptq": b.PTQ_ON,
        "models": {
            "fmnist_convnet": {
                "dataset": "fashion-mnist",
                "test_samples": 2000,
                "float_accuracy": 0.93,
                "float_accuracy_recorded": 0.9297,
                "float_weight_bytes": 7_000_000,
                "seconds": 1,
                "rows": rows,
                "mixed": {**_row("kmeans", 4, 8, True, 0.93), "weight_budget": 5000},
                "tent": tent,
                "draws": {
                    "spec": list(b.DRAW_SPEC),
                    "seeds": [0, 1, 2],
                    "drop_points": [0.1, -0.2, None],
                    "mean": -0.05,
                    "std": 0.21,
                },
            }
        },
    }
    md = b.markdown(results)
    assert "| kmeans | 2 | 2 | yes | 86.00 | +7.00 ± 0.57 | 4.0 | 4.20 |" in md
    assert "error: ConfigError: no 2-bit TFX" in md
    assert "budget 5000 B" in md and "layer bits [4, 4]" in md
    assert "drops +0.10, -0.20, error" in md
    assert "| 5 | 89.35 | 83.46 | 92.50 | 92.50 | 92.50 |" in md  # TENT's Table 2 beside ours
    b.plot(results["models"]["fmnist_convnet"], "fmnist_convnet", tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b.total_rows(True, ["fmnist_convnet"]) == len(b.GRID_FAST) + 2 + len(b.TENT_ROWS)


def test_goals_markdown_marks_each_goal():
    res = {"ptq": b.PTQ_ON, "models": {"fmnist_res8": {"test_samples": 10000,
           "float_accuracy": 0.92, "rows": [
               {**_row("kmeans", 2, 2, True, 0.87), "goal_points": 5.0, "met": False},
               {**_row("kmeans", 2, 2, True, 0.88), "input_bits": 8, "goal_points": 5.0,
                "met": True},
               {**_row("kmeans", 2, 2, True, 0.89), "input_bits": 8, "act_levels": "kmeans",
                "goal_points": 5.0, "met": True},
           ]}}}  # fmt: skip
    md = b.goals_markdown(res)
    assert "| fmnist_res8 | 2/2 | A | uniform | +6.00 ± 0.57 | <= 5.0 | no | 4.20 |" in md
    assert "| fmnist_res8 | 2/2 | 8 | uniform | +5.00 ± 0.57 | <= 5.0 | yes | 4.20 |" in md
    assert "| fmnist_res8 | 2/2 | 8 | kmeans | +4.00 ± 0.57 | <= 5.0 | yes | 4.20 |" in md
    # each goal below A8 four ways: input at A bits, input at 8, + k-means levels, + search
    assert b.goal_rows(["fmnist_res8", "imu_cnn1d"]) == 3 * 4 + 4
    assert b.goal_rows(["fmnist_convnet"], ["input-8-kmeans-search"]) == 3  # not W2A8
    assert b.goal_rows(["fmnist_convnet"], ["input-a"]) == 4


def test_partial_markdown_shows_the_unfinished_models_rows():
    """A grid stopped part way (``accuracy.partial.json``) still reads as a report: the
    finished models' tables, then the rows measured of the unfinished one, counted."""
    rows = [_row("uniform", 8, 8, False, 0.92), _row("kmeans", 4, 4, True, 0.915)]
    saved = {"fast": False, "ptq": b.PTQ_ON, "models": {},
             "partial": {"model": "fmnist_dscnn", "rows": rows}}  # fmt: skip
    text = b.partial_markdown(saved)
    assert f"## fmnist_dscnn (unfinished: 2 of {len(b.GRID)} grid rows)" in text
    assert "| kmeans | 4 | 4 | yes | 91.50 | +1.50 ± 0.57 | 4.0 | 4.20 |" in text
    assert b.partial_markdown({**saved, "partial": None}) == b.markdown(saved)


def test_resume_keeps_what_a_stopped_grid_measured(tmp_path, monkeypatch):
    """``run(resume=True)`` takes the finished models and the measured rows of a stopped
    run's ``accuracy.partial.json`` (same settings) and measures only the missing rows;
    a file written with other settings is ignored."""
    import json

    measured = []

    def fake_row(mod, spec, *args, **kwargs):  # the grid's rows cost minutes each
        measured.append(spec)
        return _row(*spec[:4], 0.9, spec[4])

    monkeypatch.setattr(b, "_row", fake_row)
    monkeypatch.setattr(b, "plot", lambda *a: None)
    kept = [_row(*spec[:4], 0.5, spec[4]) for spec in b.GRID_FAST[:3]]
    saved = {"fast": True, "ptq": b.PTQ_ON, "models": {},
             "partial": {"model": "imu_cnn1d", "rows": kept}}  # fmt: skip
    (tmp_path / "accuracy.partial.json").write_text(json.dumps(saved))
    res = b.run(tmp_path, fast=True, models=["imu_cnn1d"], resume=True)
    rows = res["models"]["imu_cnn1d"]["rows"]
    assert rows[:3] == kept and all(r["accuracy"] == 0.9 for r in rows[3:])
    n = len(b.GRID_FAST) - 3
    assert measured[:n] == b.GRID_FAST[3:]
    # then the mixed row and the calibration draws other than the grid's (seed 0)
    assert measured[n:] == [b.MIXED_SPEC] + [b.DRAW_SPEC] * (len(b.DRAW_SEEDS) - 1)
    assert res["models"]["imu_cnn1d"]["draws"]["drop_points"][1:] == [pytest.approx(3.0)] * (
        len(b.DRAW_SEEDS) - 1
    )
    (tmp_path / "accuracy.partial.json").write_text(json.dumps({**saved, "fast": False}))
    measured.clear()
    b.run(tmp_path, fast=True, models=["imu_cnn1d"], resume=True)
    assert measured[: len(b.GRID_FAST)] == b.GRID_FAST


def test_grid_rows_from_two_processes_equal_the_serial_ones():
    """``--jobs 2`` measures the same grid: rows from spawned one-thread workers (each
    loading the model and data itself) equal the ones measured in this process."""
    specs = [("uniform", 8, 8, False, "channel"), ("kmeans", 2, 8, False, "channel")]

    def rows(jobs):
        tasks = [(sp, {}) for sp in specs] + [(specs[1], {"calib_seed": 1})]
        got = dict(b.measure_rows("imu_cnn1d", True, tasks, 0.86, jobs=jobs))
        return {i: {k: v for k, v in r.items() if k != "seconds"} for i, r in got.items()}

    serial, parallel = rows(1), rows(2)
    assert set(parallel) == {0, 1, 2}
    assert serial[2]["accuracy"] != serial[1]["accuracy"]  # another calibration draw
    assert all("error" not in r and 0.3 < r["accuracy"] <= 1 for r in serial.values())
    assert parallel == serial


def test_a_grid_worker_that_cannot_load_its_model_stops_the_grid():
    """A worker whose set-up fails raises in the parent (a failing pool initializer
    would restart workers forever)."""
    specs = [("uniform", 8, 8, False, "channel"), ("uniform", 4, 4, False, "channel")]
    with pytest.raises(RuntimeError, match="grid worker could not load no_such_model"):
        list(b.measure_rows("no_such_model", True, [(sp, {}) for sp in specs], 0.9, jobs=2))
