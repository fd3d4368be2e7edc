"""The one-call API: ``tvmq.quantize(model, config) -> QuantizedModel``."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import QuantConfig, get_config
from .errors import DataError, TvmqError


def _target(target: str | dict, lut: bool = False):
    from tvm.target import Target

    if isinstance(target, dict):
        return Target(target)
    if target == "llvm":
        # One core: the models are for single-core MCUs, and the host is shared; this CPU's
        # instruction set (tvmq.targets), with AVX-512 for the LUT model when it has it.
        from .targets import host_llvm, lut_host_llvm

        return lut_host_llvm(1) if lut else host_llvm(1)
    return Target(target)


_ALIGN = 64  # bytes: what tvm.runtime.from_dlpack accepts without a copy


def _param_specs(func) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, dtype)`` of each parameter of ``func`` (reading them through the
    FFI costs several microseconds a call: :class:`QuantizedModel` keeps them)."""
    return [(p.name, tuple(int(s) for s in p.ty.shape), str(p.ty.dtype)) for p in func.params]


def _as_tensor(x: np.ndarray):
    """A TVM tensor of ``x`` (contiguous): zero-copy through DLPack when ``x`` is aligned
    as TVM wants, else through one aligned copy (``tvm.runtime.tensor`` costs ~13 us)."""
    import tvm

    if x.ctypes.data % _ALIGN:
        buf = np.empty(x.nbytes + _ALIGN, np.uint8)
        start = -buf.ctypes.data % _ALIGN
        y = buf[start : start + x.nbytes].view(x.dtype).reshape(x.shape)
        y[...] = x
        x = y
    return tvm.runtime.from_dlpack(x)


def _vm_run(vm, specs, inputs: tuple[np.ndarray, ...]) -> np.ndarray:
    """``vm``'s ``main`` (looked up once per VM: a compiled-mode VM's lookup costs ~11 us)
    on ``inputs``, checked against ``specs``."""
    if len(inputs) != len(specs):
        raise DataError(f"model takes {len(specs)} input(s), got {len(inputs)}")
    args = []
    for (name, shape, dtype), x in zip(specs, inputs):
        x = np.asarray(x)
        if x.shape != shape:
            raise DataError(f"input {name!r} must have shape {shape}, got {x.shape}")
        if x.dtype != np.dtype(dtype):
            if not np.can_cast(x.dtype, dtype, casting="same_kind"):
                raise DataError(f"input {name!r} must be {dtype}, got {x.dtype}")
            x = x.astype(dtype)
        if not np.all(np.isfinite(x)):
            raise DataError(f"input {name!r} holds NaN/inf")
        args.append(_as_tensor(np.ascontiguousarray(x)))
    main = _MAINS.get(vm)
    if main is None:
        main = _MAINS[vm] = vm["main"]
    return _to_numpy(main(*args))


_MAINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _to_numpy(out):
    """A VM result as numpy (a copy): a tensor, or a tuple of them (a 1-tuple is
    unwrapped, as ``torch.export`` programs return one)."""
    if hasattr(out, "numpy"):
        return np.from_dlpack(out).copy()
    items = [_to_numpy(o) for o in out]
    return items[0] if len(items) == 1 else tuple(items)


@dataclass
class QuantizedModel:
    """A model whose conv / dense weights are packed codes plus codebooks.

    Attributes
    ----------
    float_module : tvm.IRModule
        The imported float model.
    annotated : tvm.IRModule
        After :class:`relay_passes.AnnotateQuant` (weights are ``quant.lut_decode`` calls).
    config : QuantConfig
    layers : list of relay_passes.LayerReport
    layout : str, optional
        The convolution layout ``quantize`` converted to (None: the model's own).
    manifest : dict, optional
        Set when loaded from an artifact (:func:`tvmq.load_artifact`).
    """

    float_module: Any
    annotated: Any
    config: QuantConfig
    layers: list
    layout: str | None = None
    manifest: dict | None = None
    _vms: dict = field(default_factory=dict, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    def _specs(self, which: str):
        """The input specs of ``main`` of ``self.annotated`` or ``self.float_module``,
        read once per module object."""
        mod = getattr(self, which)
        return self._memoized(f"specs:{which}", lambda: _param_specs(mod["main"]), (mod,))

    def _memoized(self, name: str, make, deps: tuple | None = None):
        """``make()`` once per ``deps`` (by identity; default: annotated, config):
        legalization takes seconds on real models and deployment, tuning and kernel timing
        all start from it."""
        deps = (self.annotated, self.config) if deps is None else deps
        hit = self._memo.get(name)
        if hit is not None and all(a is b for a, b in zip(hit[0], deps, strict=True)):
            return hit[1]
        value = make()
        self._memo[name] = (deps, value)
        return value

    def legalized(self, unsigned_inputs: bool = False):
        """The module with LUT kernels (:class:`relay_passes.LegalizeLUT`).

        ``unsigned_inputs``: the regular convs take uint8 inputs, for an AVX-VNNI host
        (:func:`tvmq.backend.schedule.unsigned_inputs_for`); same results."""
        from relay_passes import LegalizeLUT

        act = self.config.activation
        mode = act.requantize if act is not None else "float"
        return self._memoized(
            f"legalized-{unsigned_inputs}",
            lambda: LegalizeLUT(mode, unsigned_inputs)(self.annotated),
        )

    def simulated(self):
        """The fake-quant module (:class:`relay_passes.SimulateQuant`)."""
        from relay_passes import SimulateQuant

        return SimulateQuant()(self.annotated)

    def fused(self, unsigned_inputs: bool = False):
        """The LUT module after legalization and fusion (bias, ReLU and the next layer's
        quantize fused into the LUT kernels): what code generation starts from
        (``unsigned_inputs``: see :meth:`legalized`)."""
        import tvm

        from .pipeline import fusion_passes

        return self._memoized(
            f"fused-{unsigned_inputs}",
            lambda: tvm.transform.Sequential(fusion_passes())(self.legalized(unsigned_inputs)),
        )

    def _vm(self, kind: str, target):
        tuning = getattr(self, "_tuning", None) if kind == "lut" else None
        key = (kind, str(target), tuning)
        if key not in self._vms:  # (the imports here: run() passes by on every call)
            import tvm
            from tvm import relax

            from .backend.schedule import schedule_isa, unsigned_inputs_for
            from .pipeline import lut_pipeline

            mod = {
                "lut": lambda: self.legalized(
                    unsigned_inputs_for(schedule_isa(tvm.target.Target(target)))
                ),
                "sim": self.simulated,
                "float": lambda: self.float_module,
            }[kind]()
            # Float and fake-quant modules take TVM's default pipeline; the LUT module must
            # not constant-fold (see tvmq.pipeline).
            pipeline = lut_pipeline(target, tuning) if kind == "lut" else "default"
            # the LUT model's VM program compiled to native code ("compiled"): no bytecode
            # interpreter between the kernels (KWS on the host: 46.4 -> 44.6 us)
            exe = relax.build(mod, target=target, relax_pipeline=pipeline,
                              exec_mode="compiled" if kind == "lut" else "bytecode")  # fmt: skip
            self._vms[key] = relax.VirtualMachine(exe, tvm.cpu())
        return self._vms[key]

    def build(self, target: str | dict = "llvm", tuning: str | None = None) -> QuantizedModel:
        """Compile the LUT-kernel module for ``target``; returns ``self`` for chaining.

        ``tuning`` is a :func:`tvmq.tune.tune` work directory whose best schedules are
        applied (kernels without a record keep tvmq's schedule)."""
        if tuning is not None:
            from .tune import has_database

            if not has_database(tuning):
                raise TvmqError(f"{tuning} holds no tuning database (run tvmq.tune first)")
            tuning = str(tuning)
        self._target = _target(target, lut=True)
        self._tuning = tuning
        self._vm("lut", self._target)
        return self

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        """Run the built LUT-kernel model (builds for llvm first if needed)."""
        target = getattr(self, "_target", None) or _target("llvm", lut=True)
        return _vm_run(self._vm("lut", target), self._specs("annotated"), inputs)

    def vm(self, kind: str = "lut"):
        """The Relax ``VirtualMachine`` of the built LUT model (``kind="float"``: the float
        model): call ``vm["main"](*tvm.runtime.tensor inputs)`` to time the model without
        :meth:`run`'s input checks and conversions (~20-40 us on the host)."""
        if kind not in ("lut", "float"):
            raise TvmqError(f"kind must be 'lut' or 'float', got {kind!r}")
        target = getattr(self, "_target", None) or _target("llvm", lut=True)
        return self._vm(kind, target if kind == "lut" else _target("llvm"))

    def simulate(self, *inputs: np.ndarray) -> np.ndarray:
        """Run the fake-quant model on the host (float kernels, quantized weights)."""
        return _vm_run(self._vm("sim", _target("llvm")), self._specs("annotated"), inputs)

    def run_float(self, *inputs: np.ndarray) -> np.ndarray:
        """Run the original float model on the host."""
        return _vm_run(self._vm("float", _target("llvm")), self._specs("float_module"), inputs)

    def save(self, path, *, source=None) -> Any:
        """Write this model as a ``.tvmq`` artifact (atomically); see :mod:`tvmq.artifact`.

        ``source`` is the model file it came from (its name and hash go into the manifest).
        """
        from .artifact import save

        return save(self, path, source=source, layout=self.layout)

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(s) for s in p.ty.shape) for p in self.float_module["main"].params]

    def report(self) -> dict:
        """Per-layer scheme, bits, weight SQNR and bytes, plus totals."""
        float_bytes = sum(r.float_bytes for r in self.layers)
        quant_bytes = sum(r.quant_bytes for r in self.layers)
        return {
            "config": self.config.to_dict(),
            "layers": [r.to_dict() for r in self.layers],
            "float_weight_bytes": float_bytes,
            "quant_weight_bytes": quant_bytes,
            "compression": float_bytes / quant_bytes if quant_bytes else None,
        }


def _has_op(mod, name: str) -> bool:
    """Whether a Relax function of ``mod`` binds a call to operator ``name``."""
    from tvm import relax

    from relay_passes._graph import bindings_and_uses, op_name

    return any(
        op_name(value) == name
        for _, func in mod.functions_items()
        if isinstance(func, relax.Function)
        for value in bindings_and_uses(func)[0].values()
    )


def quantize(
    model: Any,
    config: str | QuantConfig | dict = "w4-kmeans",
    *,
    calib: Any = None,
    layout: str | None = None,
) -> QuantizedModel:
    """Quantize a model's conv / dense weights to LUT codes.

    Parameters
    ----------
    model : tvm.IRModule, str, Path, onnx.ModelProto or torch.export.ExportedProgram
        An imported module (:func:`tvmq.load_model`) or anything ``load_model`` accepts.
    config : str, QuantConfig or dict
        A preset (``"w4-kmeans"``, ``"w8-uniform"``, ``"tfx8"``...; see
        :data:`tvmq.config.PRESETS`) or a config.
    calib : iterable, optional
        Calibration inputs (a few hundred real samples, never test data), each shaped like
        ``main``'s input: needed when the config quantizes activations, an error otherwise
        (it would be silently unused).
    layout : {"NHWC", "NCHW"}, optional
        Convert 2-D convolutions to this layout first
        (:func:`tvmq.frontend.load.convert_layout`); ``"NHWC"`` is what the MCU kernels run
        fastest. The model's inputs and outputs keep their layout.

    Returns
    -------
    QuantizedModel
    """
    import tvm

    from relay_passes import annotate_quant, calibrate

    from .frontend.load import load_model

    cfg = get_config(config)
    if cfg.activation is None and calib is not None and not cfg.ptq.needs_data:
        raise TvmqError(
            "calibration data given, but the config keeps activations in float32 and has "
            "no use for it; pass calib=None or a config with activation=..."
        )
    if cfg.activation is not None and calib is None:
        raise TvmqError(
            "the config quantizes activations: pass calib= with a few hundred real input "
            "samples (not test data)"
        )
    mod = model if isinstance(model, tvm.IRModule) else load_model(model)
    if layout is not None:
        from .frontend.load import convert_layout

        mod = convert_layout(mod, layout)
    if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        raise TvmqError("the module has no 'main' function")
    if cfg.ptq.fold_bn and _has_op(mod, "relax.nn.batch_norm"):
        # W * scale becomes one constant (before annotation, so nothing decoded is folded)
        mod = tvm.relax.transform.FoldBatchnormToConv2D()(mod)
        mod = tvm.relax.transform.FoldConstant()(mod)
    if cfg.ptq.cle:
        from relay_passes.equalize import cross_layer_equalize

        mod, _ = cross_layer_equalize(mod)
        if cfg.ptq.cle_activations and cfg.activation is not None:
            from relay_passes.equalize import equalize_activations

            from .ptq.inputs import collect

            calib = list(calib)  # given: the config quantizes activations (checked above)
            weight = {
                k: v for k, v in cfg.weight.to_dict().items() if k not in ("axis", "group_size")
            }
            mod, _ = equalize_activations(
                mod, collect(mod, calib, cfg.ptq.max_rows), weight, cfg.activation.bits
            )
    layer_inputs = None
    if cfg.ptq.needs_data:
        if calib is None:
            steps = [n for n, on in (("layerwise", cfg.ptq.layerwise),
                     ("bias_correction", cfg.ptq.bias_correction != "none"),
                     ("weight_budget", cfg.ptq.weight_budget is not None)) if on]  # fmt: skip
            raise TvmqError(f"ptq {', '.join(steps)} needs calibration data: pass calib=")
        from .ptq.inputs import collect

        calib = list(calib)  # rows of the module as equalized: collected again after CLE
        layer_inputs = collect(mod, calib, cfg.ptq.max_rows)
    annotated, report = annotate_quant(mod, cfg, layer_inputs)
    if cfg.activation is not None:
        annotated, _ = calibrate(annotated, calib, cfg.activation)
        if cfg.ptq.layerwise and cfg.ptq.sequential:
            from relay_passes.annotate_quant import refit_on_quantized_inputs

            annotated, report = refit_on_quantized_inputs(mod, annotated, calib, cfg, report)
    if cfg.ptq.bias_correction == "outputs":
        import dataclasses

        from relay_passes.bias_correct import correct_bias

        annotated, notes = correct_bias(mod, annotated, calib)
        report = [
            dataclasses.replace(r, note="; ".join(x for x in (r.note, n) if x))
            if r.scheme is not None else r
            for r, n in zip(report, notes, strict=True)
        ]  # fmt: skip
    if cfg.ptq.range_search:
        from relay_passes.range_search import search_ranges

        annotated, _ = search_ranges(mod, annotated, calib)
    return QuantizedModel(
        float_module=mod, annotated=annotated, config=cfg, layers=report, layout=layout
    )
