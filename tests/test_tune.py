"""MetaSchedule tuning of the LUT kernels: a small real run, its database, applying it."""

import numpy as np
import pytest
import tvm
from test_integer_path import calib_batches
from test_quantize_e2e import onnx_model
from tvm import relax

import tvmq
from tvmq.config import fixed_point
from tvmq.tune import has_database, host_target, tune

fixed = fixed_point


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    work = tmp_path_factory.mktemp("tune")
    qm = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib_batches(4))
    seen = []
    res = tune(qm, work, trials=4, per_iter=2, progress=lambda *a: seen.append(a))
    return qm, work, res, seen


def test_small_tuning_run_measures_and_persists(tuned):
    _, work, res, seen = tuned
    assert has_database(work)
    assert sum(t.trials for t in res.tasks.values()) >= 2
    assert seen and all(name in res.tasks for name, _, _ in seen)
    measured = [t.best_s for t in res.tasks.values() if t.best_s is not None]
    assert measured and all(0 < s < 1.0 for s in measured)


def test_database_applies_and_keeps_outputs_bit_identical(tuned):
    qm, work, _, _ = tuned
    target = host_target()
    with target:
        applied = relax.transform.MetaScheduleApplyDatabase(str(work))(qm.fused())
    scheduled = [
        gv.name_hint
        for gv, f in applied.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and int((f.attrs or {}).get("tirx.is_scheduled", 0))
    ]
    assert scheduled, "no kernel took a schedule from the database"
    x = np.random.default_rng(4).standard_normal((1, 3, 12, 12)).astype(np.float32)
    untuned = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib_batches(4))
    tuned_qm = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib_batches(4))
    a = untuned.build().run(x)
    b = tuned_qm.build(tuning=str(work)).run(x)
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_rerun_with_spent_budget_measures_nothing(tuned):
    qm, work, first, _ = tuned
    again = tune(qm, work, trials=3, trials_per_task=1, per_iter=3)
    measured_before = [t for t in first.tasks.values() if t.trials > 0]
    assert measured_before
    for t in measured_before:
        assert again.tasks[t.name].previous >= 1 and again.tasks[t.name].trials == 0


def _records(work) -> int:
    from tvm.s_tir import meta_schedule as ms

    return len(ms.database.JSONDatabase(work_dir=str(work)).get_all_tuning_records())


def test_tvmq_seed_is_recorded_once_and_added_to_an_older_database(tuned, tmp_path):
    """Re-running finds tvmq's schedule already recorded (by its trace): nothing is added.
    A database without it (searched only, as one from an older tvmq would be) gets it
    even though its trial budget is spent."""
    qm, work, _, _ = tuned
    before = _records(work)
    tune(qm, work, trials=3, trials_per_task=1, per_iter=3)
    assert _records(work) == before
    old = tmp_path / "old"
    tune(qm, old, trials=2, trials_per_task=1, per_iter=2, seed_with_tvmq=False)
    assert _seeded(old) == (False,)
    tune(qm, old, trials=2, trials_per_task=1, per_iter=2)
    assert _seeded(old) == (True,)


def _seeded(work) -> tuple[bool, ...]:
    """Per workload with records: whether tvmq's schedule of it is among them."""
    from tvm.s_tir import meta_schedule as ms

    from tvmq.backend.schedule import schedule_isa, schedule_of

    by_workload: dict = {}
    for r in ms.database.JSONDatabase(work_dir=str(work)).get_all_tuning_records():
        by_workload.setdefault(str(r.workload.mod), (r.workload.mod, set()))[1].add(str(r.trace))
    out = set()
    for mod, traces in by_workload.values():
        sch = schedule_of(mod, schedule_isa(host_target()))
        if sch is not None:
            out.add(str(sch.trace) in traces)
    return tuple(sorted(out))


def test_build_with_missing_database_is_a_clear_error(tmp_path):
    qm = tvmq.quantize(onnx_model(), "w4-kmeans")
    with pytest.raises(tvmq.TvmqError, match="no tuning database"):
        qm.build(tuning=str(tmp_path))


def test_measurements_farm_out_through_a_tvm_rpc_tracker(tmp_path):
    """TVM's own tracker and two servers on localhost; MetaSchedule's RPCRunner sends the
    candidates to them (no home-made scheduler)."""
    from tvm import rpc
    from tvm.rpc.tracker import Tracker
    from tvm.s_tir import meta_schedule as ms

    tracker = Tracker("127.0.0.1", port=9190, port_end=9290, silent=True)
    addr = ("127.0.0.1", tracker.port)
    servers = [
        rpc.Server("127.0.0.1", port=9300, port_end=9400, key="tvmq", tracker_addr=addr)
        for _ in range(2)
    ]
    try:
        import time

        deadline = time.time() + 20
        while time.time() < deadline:
            summary = rpc.connect_tracker("127.0.0.1", tracker.port).summary()
            if summary["queue_info"].get("tvmq", {}).get("free", 0) == 2:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the two RPC servers did not register with the tracker")
        config = ms.runner.RPCConfig(
            tracker_host="127.0.0.1", tracker_port=tracker.port, tracker_key="tvmq",
            session_timeout_sec=60,
        )  # fmt: skip
        runner = ms.runner.RPCRunner(rpc_config=config, max_workers=2)
        qm = tvmq.quantize(onnx_model(), "w4-kmeans")
        res = tune(qm, tmp_path / "db", trials=2, per_iter=2, runner=runner)
        measured = [t for t in res.tasks.values() if t.best_s is not None]
        assert measured, res.to_dict()
    finally:
        for s in servers:
            s.terminate()
        tracker.terminate()


def test_time_limit_stops_the_search_and_keeps_records(tmp_path):
    qm = tvmq.quantize(onnx_model(), "w4-kmeans")
    res = tune(qm, tmp_path, trials=30, per_iter=2, time_limit_s=0.0)
    assert res.interrupted
    assert has_database(tmp_path)
    assert sum(t.trials for t in res.tasks.values()) == 2  # the first round, then stop
