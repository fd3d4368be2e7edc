"""Autotuning of the LUT kernels with MetaSchedule's XGBoost cost model.

:func:`tune` extracts the fused LUT kernels of a quantized model as MetaSchedule tasks
(after LegalizeOps / FuseOps / FuseTIR, so what is tuned is what runs), searches schedules
with the evolutionary strategy guided by the XGBoost cost model, measures candidates on
the host, and keeps every measurement in a JSON database in ``work_dir``. Building with
``QuantizedModel.build(tuning=work_dir)`` applies the best records
(``MetaScheduleApplyDatabase``); kernels without a record keep tvmq's own schedule.
Running :func:`tune` again with the same ``work_dir`` continues from the records: tasks
whose trial budget is spent are not measured again.

TVM 0.27 quirks handled here:

* The stock ``LocalBuilder`` imports ``tvm.s_tir.tensor_intrin`` (~30 s) in every fresh
  build worker, so with its 30 s timeout no candidate ever builds. :func:`build_candidate`
  builds without that import; the builder gets a 120 s timeout.
* MetaSchedule needs ``psutil`` and ``cloudpickle`` (dependencies of tvmq).
* The first ``TuneContext`` in a process imports the tensor intrinsics once (~30 s).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tvm

from .errors import TvmqError

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 120.0


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params=None):
    """MetaSchedule builder function: ``default_build`` minus the tensor-intrinsic import."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def host_target(num_cores: int = 1) -> tvm.target.Target:
    """The host LLVM target of LUT builds (this CPU: :func:`tvmq.targets.lut_host_llvm`),
    single-core by default (MCUs have one core)."""
    import multiprocessing

    from .targets import lut_host_llvm

    cores = num_cores or multiprocessing.cpu_count()
    return lut_host_llvm(int(cores))


@dataclass
class TaskResult:
    """One tuned kernel: its name, trials measured in this run and the best time measured
    in this run (seconds, or None)."""

    name: str
    trials: int = 0
    best_s: float | None = None
    history: list[float] = field(default_factory=list)
    previous: int = 0
    """Successful records the database already held for this kernel before the run."""


@dataclass
class TuneResult:
    work_dir: Path
    tasks: dict[str, TaskResult]
    seconds: float
    interrupted: bool = False

    def to_dict(self) -> dict:
        return {
            "work_dir": str(self.work_dir),
            "seconds": self.seconds,
            "interrupted": self.interrupted,
            "tasks": {
                k: {
                    "trials": t.trials,
                    "previous": t.previous,
                    "best_s": t.best_s,
                    "history": t.history,
                }
                for k, t in self.tasks.items()
            },
        }


def lut_task_names(mod: tvm.IRModule) -> list[str]:
    return sorted(gv.name_hint for gv, f in mod.functions_items() if "lut_" in gv.name_hint)


def tune(
    qm,
    work_dir: str | Path,
    *,
    trials: int = 64,
    trials_per_task: int | None = None,
    per_iter: int = 16,
    time_limit_s: float | None = None,
    target: tvm.target.Target | str | None = None,
    ops: str = "lut",
    kernels: list[str] | None = None,
    seed: int = 0,
    seed_with_tvmq: bool = True,
    progress: Any = None,
    runner: Any = "local",
) -> TuneResult:
    """Tune the LUT kernels of ``qm`` (a :class:`tvmq.QuantizedModel`), or the kernels of a
    plain Relax module (e.g. the float model, with ``ops="all"``, for a tuned baseline;
    build it with ``tvm.compile(mod, target, relax_pipeline=lut_pipeline(target, work_dir))``).

    Parameters
    ----------
    work_dir : path
        Where the JSON database (``database_workload.json``, ``database_tuning_record.json``)
        and MetaSchedule's logs go; reused across runs.
    trials, trials_per_task : int
        Measurement budgets over all tasks and per task.
    per_iter : int
        Candidates measured per search round.
    target : Target, "llvm" or "qemu:BOARD"
        Where candidates are measured: the host (default, one core), or an emulated
        Cortex-M: each candidate is printed as plain C, cross-compiled and run in QEMU, its
        cost the exact instruction count (:mod:`tvmq.backend.mcu_measure`); apply such a
        database with :func:`apply_to_module` before generating the device C.
    time_limit_s : float, optional
        Stop starting new rounds after this many seconds (the round under way finishes).
    ops : {"lut", "all"}
        Tune only the LUT kernels (the rest keep TVM's default schedules), or every kernel.
    kernels : list of str, optional
        Tune only these kernels (names as :func:`kernel_times` and ``tvmq tune`` list
        them), e.g. the costliest one; an unknown name is an error listing the known ones.
    seed_with_tvmq : bool
        Measure tvmq's own schedule of each new kernel first and record it (not counted
        in the trials): the search starts from it (evolutionary search draws part of its
        first population from the database) and applying the database never picks a
        schedule slower than tvmq's, even after a tiny budget.
    progress : callable, optional
        ``progress(task_name, trials, best_s)`` after each measured batch.
    runner : "local" or a MetaSchedule Runner
        Where candidates run (an ``RPCRunner`` farms them out through a TVM RPC tracker).

    Ctrl-C stops the search and keeps everything measured so far in the database.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    work_dir = Path(work_dir)
    target, board_name = resolve_target(target)
    builder = None
    if board_name is not None:
        from .backend.mcu_measure import qemu_builder_runner

        builder, runner = qemu_builder_runner(board_name)
    work_dir.mkdir(parents=True, exist_ok=True)
    mod = _fused(qm, target)
    names = lut_task_names(mod) if ops == "lut" else None
    if names is not None and not names:
        raise TvmqError("the model has no LUT kernels to tune")
    if kernels:
        known = names if names is not None else [gv.name_hint for gv in mod.get_global_vars()]
        unknown = sorted(set(kernels) - set(known))
        if unknown:
            raise TvmqError(f"no kernel named {', '.join(unknown)}; kernels: {', '.join(known)}")
        names = list(kernels)
    tasks: dict[str, TaskResult] = {}
    stopped: list[str] = []  # why the search stopped early (the FFI drops exception types)
    t0 = time.time()

    @derived_object
    class _Progress(ms.measure_callback.PyMeasureCallback):
        def apply(
            self, task_scheduler, task_id, measure_candidates, builder_results, runner_results
        ):
            ctx = task_scheduler.tasks_[task_id].ctx
            name = str(ctx.task_name)
            res = tasks.setdefault(name, TaskResult(name))
            for r in runner_results:
                res.trials += 1
                if r.error_msg is None and r.run_secs:
                    t = float(sum(float(s) for s in r.run_secs) / len(r.run_secs))
                    res.best_s = t if res.best_s is None else min(res.best_s, t)
                res.history.append(res.best_s if res.best_s is not None else float("nan"))
            if progress is not None:
                progress(name, res.trials, res.best_s)
            if time_limit_s is not None and time.time() - t0 > time_limit_s:
                stopped.append("time limit")
                raise _TimeUp()

    rx = ms.relax_integration
    selected = [t for t in rx.extract_tasks(mod, target) if names is None or t.task_name in names]
    per_task = trials_per_task or -(-trials // max(1, len(selected)))
    database = ms.database.JSONDatabase(work_dir=str(work_dir))
    todo = []
    for t in selected:
        done = len(database.get_top_k(database.commit_workload(t.dispatched[0]), per_task))
        tasks[t.task_name] = TaskResult(t.task_name, previous=done)
        if done < per_task:
            todo.append(t)
    if todo:  # one builder and one runner (worker pool) for the seeds and the search
        builder, runner = _measurers(builder, runner)
    if seed_with_tvmq:  # every kernel, so a database from an older tvmq gets today's seed
        builder, runner = _seed(selected, database, builder, runner, target)
    interrupted = _run(todo, work_dir, seed, per_task, trials, per_iter, runner, database,
                       _Progress, stopped, builder)  # fmt: skip
    return TuneResult(work_dir, tasks, round(time.time() - t0, 1), interrupted)


def _measurers(builder, runner):
    """``(builder, runner)`` ready to measure: tvmq's host builder when none was given
    (:func:`build_candidate`), a runner made from its name when given one."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder import LocalBuilder

    if builder is None:
        builder = LocalBuilder(f_build=build_candidate, timeout_sec=BUILD_TIMEOUT_S, max_workers=1)
    if isinstance(runner, str):
        runner = ms.runner.Runner.create(runner)
    return builder, runner


def _seed(tasks, database, builder, runner, target):
    """Measure and record tvmq's schedule of every kernel whose database holds no record
    of that very schedule (see ``tune``); returns ``(builder, runner)``, made when first
    needed."""
    from tvm.s_tir import meta_schedule as ms

    from .backend.schedule import schedule_isa, schedule_of

    for task in tasks:
        workload = database.commit_workload(task.dispatched[0])
        sch = schedule_of(task.dispatched[0], schedule_isa(target))
        if sch is None:
            continue
        trace = str(sch.trace)
        if any(str(r.trace) == trace for r in database.get_top_k(workload, 1 << 16)):
            continue
        builder, runner = _measurers(builder, runner)
        args = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
        (built,) = builder.build([ms.builder.BuilderInput(sch.mod, target)])
        if built.error_msg is not None:
            log.warning("tvmq schedule of %s does not build: %s", task.task_name, built.error_msg)
            continue
        try:
            (future,) = runner.run([ms.runner.RunnerInput(built.artifact_path, "cpu", args)])
            res = future.result()
        finally:
            import shutil

            shutil.rmtree(Path(built.artifact_path).parent, ignore_errors=True)
        if res.error_msg is None and res.run_secs:
            database.commit_tuning_record(
                ms.database.TuningRecord(sch.trace, workload, res.run_secs, target, args)
            )
    return builder, runner


def _run(todo, work_dir, seed, per_task, trials, per_iter, runner, database, progress_cls,
         stopped, builder):  # fmt: skip
    from tvm.s_tir import meta_schedule as ms

    interrupted = False
    if todo:
        contexts, weights = _tune_contexts(todo, Path(work_dir), seed, per_task)
        callbacks = [*ms.measure_callback.MeasureCallback.create("default"), progress_cls()]
        # MetaSchedule's task scheduler prints a table per round on its stdout handler
        # (when its loggers exist); the caller shows progress instead.
        quiet = [
            (h, h.level)
            for h in logging.getLogger("tvm.s_tir.meta_schedule").handlers
            if type(h) is logging.StreamHandler
        ]
        for h, _ in quiet:
            h.setLevel(logging.WARNING)
        try:
            ms.tune.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(work_dir),
                max_trials_global=min(trials, per_task * len(todo)),
                max_trials_per_task=per_task,
                num_trials_per_iter=per_iter,
                builder=builder,
                runner=runner,
                database=database,
                measure_callbacks=callbacks,
            )
        except (KeyboardInterrupt, _TimeUp):
            interrupted = True
        except Exception as exc:  # TVM re-raises callback exceptions as a bare RuntimeError
            if not stopped and "KeyboardInterrupt" not in str(exc):
                raise
            interrupted = True
        finally:
            for h, level in quiet:
                h.setLevel(level)
    return interrupted


def search_strategy(per_task: int):
    """Evolutionary search sized to the budget: MetaSchedule's defaults (population 512,
    4 genetic rounds, scored by the cost model on one thread) cost ~30 s per round on a
    big kernel before anything is measured, which only pays with hundreds of trials.
    With a small budget a population of 16x the per-task trials finds the same first
    candidates for a fraction of the time (4 trials on the ConvNet's first conv:
    ~140 s -> ~40 s)."""
    from tvm.s_tir.meta_schedule.search_strategy import EvolutionarySearch

    pop = int(min(512, max(64, 16 * per_task)))
    return EvolutionarySearch(
        population_size=pop,
        init_min_unmeasured=min(50, pop // 2),
        genetic_num_iters=4 if pop >= 256 else 2,
    )


def _tune_contexts(todo, work_dir: Path, seed: int, per_task: int = 64):
    """TuneContexts with plain per-task file loggers in ``work_dir/logs``.

    MetaSchedule's own ``extracted_tasks_to_tune_contexts`` configures its loggers with
    ``logging.config.dictConfig``; a second tuning run in the same process then fails
    inside that set-up (``'NoneType' object has no attribute 'format'`` in TVM 0.27)."""
    from tvm.s_tir.meta_schedule import TuneContext
    from tvm.s_tir.meta_schedule.utils import fork_seed

    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    contexts, weights = [], []
    for task, rand in zip(todo, fork_seed(seed, n=len(todo))):
        logger = logging.getLogger(f"tvmq.tune.{task.task_name}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        path = str(log_dir / f"{task.task_name[:100]}.log")
        for h in list(logger.handlers):  # one file per work dir and task
            logger.removeHandler(h)
            h.close()
        logger.addHandler(logging.FileHandler(path))
        ctx = TuneContext(
            mod=task.dispatched[0], target=task.target, space_generator="post-order-apply",
            search_strategy=search_strategy(per_task), task_name=task.task_name, logger=logger,
            rand_state=rand, num_threads=1,
        )  # fmt: skip
        contexts.append(ctx.clone())
        weights.append(task.weight)
    return contexts, weights


class _TimeUp(Exception):
    """The wall-clock limit of :func:`tune` passed."""


def resolve_target(target) -> tuple[tvm.target.Target, str | None]:
    """``(Target, QEMU board or None)`` for a tuning target: a Target, None or ``"llvm"``
    (the host, one core), or ``"qemu:BOARD"`` (LLVM's description of the board's core; an
    unknown board is an error listing the known ones)."""
    if isinstance(target, str) and target.startswith("qemu:"):
        from .backend.mcu_measure import mcu_target

        board_name = target.split(":", 1)[1]
        return mcu_target(board_name), board_name
    if isinstance(target, str) and target != "llvm":
        raise TvmqError(f"tuning target must be 'llvm' or 'qemu:BOARD', got {target!r}")
    return (host_target() if target is None or isinstance(target, str) else target), None


def _fused(qm, target) -> tvm.IRModule:
    """What is tuned and timed for ``target``: :meth:`QuantizedModel.fused` (with uint8
    conv inputs on an AVX-VNNI host), or a plain Relax module (e.g. the float model)
    through the same fusion passes."""
    if isinstance(qm, tvm.IRModule):
        from .pipeline import fusion_passes

        return tvm.transform.Sequential(fusion_passes())(qm)
    from .backend.schedule import schedule_isa, unsigned_inputs_for

    return qm.fused(unsigned_inputs_for(schedule_isa(target)))


def apply_to_module(mod: tvm.IRModule, work_dir: str | Path, target) -> tvm.IRModule:
    """``mod`` (e.g. :meth:`QuantizedModel.fused`) with the kernels that have a record in
    the database in ``work_dir`` for ``target`` replaced by their best schedule (marked
    scheduled, so :func:`tvmq.backend.schedule.schedule_mcu` leaves them alone). For a
    QEMU-tuned database pass ``"qemu:BOARD"``; then :func:`tvmq.backend.aot.generate_aot`
    emits the tuned C."""
    from tvm import relax

    if not has_database(work_dir):
        raise TvmqError(f"{work_dir} holds no tuning database (run tvmq tune first)")
    target, _ = resolve_target(target)
    with target:
        return relax.transform.MetaScheduleApplyDatabase(str(work_dir))(mod)


def has_database(work_dir: str | Path) -> bool:
    d = Path(work_dir)
    return (d / "database_tuning_record.json").exists() and (d / "database_workload.json").exists()


def kernel_times(
    qm, *, target: tvm.target.Target | None = None, tuning: str | Path | None = None,
    schedule: bool = False, names: list[str] | None = None, repeat: int = 15,
) -> dict[str, float]:  # fmt: skip
    """Median seconds per call of each LUT kernel of ``qm`` on the host, built alone:
    TE's default schedule, tvmq's schedule (``schedule=True``) or the tuned one
    (``tuning``: a work directory). Inputs are random (timing only)."""
    import numpy as np

    from .backend.schedule import schedule_isa, schedule_mcu

    target = target or host_target()
    mod = _fused(qm, target)
    if tuning is not None:
        mod = apply_to_module(mod, tuning, target)
    if schedule:
        mod = schedule_mcu(mod, schedule_isa(target))
    rng = np.random.default_rng(0)
    out = {}
    for name in names or lut_task_names(mod):
        prim = mod[name].with_attr("global_symbol", name)
        rt = tvm.compile(tvm.IRModule({name: prim}), target=target)
        args = []
        for p in prim.params:
            shape = [int(s) for s in p.shape]
            dtype = str(p.dtype)
            if dtype.startswith(("int", "uint")):
                info = np.iinfo(dtype)
                a = rng.integers(max(info.min, -100), min(info.max, 100), shape).astype(dtype)
            else:
                a = rng.standard_normal(shape).astype(dtype)
            args.append(tvm.runtime.tensor(a))
        timer = rt.mod.time_evaluator(name, tvm.cpu(), number=5, repeat=repeat)
        out[name] = float(np.median(timer(*args).results))
    return out
