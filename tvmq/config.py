"""Model-level quantization config: the weight scheme, granularity, per-layer overrides, skips.

Layers are named by :class:`relay_passes.AnnotateQuant` in graph order as
``layer<i>_<kind>`` (kind: ``dense``, ``conv1d``, ``conv2d``, ``depthwise``), e.g.
``layer0_conv2d``; override and skip patterns are :mod:`fnmatch` patterns on those names,
plus the words ``first`` and ``last``.

Activations are float32 unless ``activation`` is set: then the input of every quantized
layer is quantized to ``bits`` (uniform, int8 storage) with ranges from calibration data,
the weight level tables are snapped to an int8 grid, and the layers run as integer kernels.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, UnknownNameError
from .schemes import SchemeConfig, make_config

CONFIG_VERSION = 1
_GRANULARITIES = ("channel", "tensor", "group", "shared")


_ACT_METHODS = ("minmax", "percentile", "mse")
_ACT_SCHEMES = ("uniform", "kmeans")


@dataclass(frozen=True, kw_only=True)
class ActivationConfig:
    """Activation quantization of the inputs of quantized layers (per tensor).

    Parameters
    ----------
    bits : int
        2 to 8 (stored as int8).
    method : {"minmax", "percentile", "mse"}
        How :class:`relay_passes.Calibrate` sets the range from calibration data.
    percentile : float
        Upper percentile for ``method="percentile"`` (the lower one is ``100 - p``).
    requantize : {"float", "fixed"}
        Epilogue of the integer kernels: ``"float"`` scales the int32 sum by a float32 per
        channel (matches fake-quant simulation to 1e-5; for cores with an FPU);
        ``"fixed"`` folds bias, ReLU/ReLU6 and the next layer's quantize into an
        integer-only multiplier/shift (within one output code of the simulation; for
        FPU-less cores such as Cortex-M3).
    input_bits : int, optional
        Bits for layers that read a model input directly (the first layer), e.g. 8 with
        ``bits=2``: the raw input (pixels) is the one activation a low-bit code hurts most,
        and it is usually stored in 8 bits anyway. None: ``bits``.
    scheme : {"uniform", "kmeans"}
        ``"kmeans"``: below 8 bits, ``2**bits`` levels of an 8-bit grid (over the calibrated
        min-max range) placed by Lloyd-Max on the calibration values, starting from the
        ``method`` uniform quantizer's levels, zero kept exact. Still int8 codes of one
        scale and zero point for the consumer; the producer snaps each code to its nearest
        level through a 256-byte table (:mod:`tvmq.kernels.activation`).
    """

    bits: int = 8
    method: str = "mse"
    percentile: float = 99.99
    requantize: str = "float"
    input_bits: int | None = None
    scheme: str = "uniform"

    def __post_init__(self) -> None:
        from .packing import check_bits

        check_bits(self.bits)
        if self.input_bits is not None:
            check_bits(self.input_bits)
        if self.method not in _ACT_METHODS:
            raise ConfigError(
                f"activation method must be one of {_ACT_METHODS}, got {self.method!r}"
            )
        if self.requantize not in ("float", "fixed"):
            raise ConfigError(f"requantize must be 'float' or 'fixed', got {self.requantize!r}")
        if self.scheme not in _ACT_SCHEMES:
            raise ConfigError(
                f"activation scheme must be one of {_ACT_SCHEMES}, got {self.scheme!r}"
            )
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PTQConfig:
    """Post-training steps that use calibration data beyond setting activation ranges.

    Parameters
    ----------
    layerwise : bool
        Fit each free-form codebook (k-means, quantile) to the layer's output on
        calibration data instead of its weights: alternately assign codes with error
        feedback across columns (``gptq``, :func:`tvmq.ptq.gptq_codes`) and solve the
        levels that make ``||W X - W_hat X||`` minimal for those codes (ridge least squares
        per codebook, :func:`tvmq.ptq.refine_levels`). Dense and convolution layers
        (grouped and depthwise ones per group); per-group codebooks keep their
        weight-space fit.
    ridge : float
        Pull toward the weight-space levels, relative to the mean curvature (0: plain
        least squares; guards against overfitting a few hundred calibration samples).
    gptq : bool
        With ``layerwise``: code assignment with error feedback (else nearest level).
    damp : float
        Diagonal added to the inputs' second-moment matrix for ``gptq``, relative to its
        mean (regularizes it for few calibration rows).
    iterations : int
        Rounds of codes-then-levels for ``layerwise``.
    sequential : bool
        With ``layerwise`` and quantized activations: after calibration, fit each layer
        again, in graph order, on the inputs the quantized network really gives it, to
        reproduce the float output (:func:`relay_passes.annotate_quant.
        refit_on_quantized_inputs`; one calibration run per layer). What low activation
        bits need: each layer compensates the error of the ones before it.
    max_rows : int
        Calibration rows (samples x output pixels) per layer, sampled at random.
    bias_correction : {"none", "weights", "outputs"}
        Give back the mean output shift quantization causes, through the bias constant
        that follows each layer. ``"weights"``: the shift ``(W - W_hat) E[x]`` of weight
        quantization alone, from the float inputs (:func:`tvmq.ptq.bias.bias_shift`;
        cheap). ``"outputs"``: the measured shift of the quantized network (activations
        too), layer after layer (:func:`relay_passes.bias_correct.correct_bias`; one
        build and calibration run per layer). ``True`` means ``"outputs"``.
    weight_budget : int, optional
        Mixed precision: pick each layer's weight bits from ``bit_choices`` so that the
        weights (codes + codebooks, plus any layer kept in float) take at most this many
        bytes, minimizing the summed relative output error measured on calibration data
        (:mod:`tvmq.ptq.mixed`). Replaces the scheme's ``bits``; overrides still choose
        the scheme. None: every layer at the configured bits.
    bit_choices : tuple of int
        The widths mixed precision chooses from.
    fold_bn : bool
        Fold ``batch_norm`` after a convolution into its weight and bias before anything
        else (TVM's ``FoldBatchnormToConv2D``), so the folded weight is what is quantized.
    cle : bool
        Cross-layer equalization of consecutive layers joined by ReLU / max pooling
        (:func:`relay_passes.equalize.cross_layer_equalize`), after batch-norm folding:
        the float function is unchanged, channel ranges get even.
    cle_activations : bool
        With ``cle`` and quantized activations: then rescale each pair toward even
        *activation* channel ranges, as far as the second layer's quantized output error
        on calibration data says it pays (:func:`relay_passes.equalize.equalize_activations`).
    range_search : bool
        Last, with quantized activations: loss-aware activation ranges (LAPQ-style):
        coordinate descent over each activation's scale (x0.6 to x1.4, levels and zero
        point kept) minimizing the KL divergence of the model's softmax output from the
        float model's on the calibration data (:func:`relay_passes.range_search.
        search_ranges`; for classifiers; one fake-quant build and calibration run per
        candidate: minutes).
    """

    layerwise: bool = False
    ridge: float = 0.05
    gptq: bool = True
    damp: float = 0.01
    iterations: int = 2
    sequential: bool = False
    max_rows: int = 4096
    bias_correction: str = "none"
    weight_budget: int | None = None
    bit_choices: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
    fold_bn: bool = True
    cle: bool = False
    cle_activations: bool = False
    range_search: bool = False

    def __post_init__(self) -> None:
        from .packing import check_bits

        if self.ridge < 0:
            raise ConfigError(f"ridge must be >= 0, got {self.ridge}")
        bc = self.bias_correction
        if isinstance(bc, bool):
            object.__setattr__(self, "bias_correction", "outputs" if bc else "none")
        elif bc not in ("none", "weights", "outputs"):
            raise ConfigError(f"bias_correction must be 'none', 'weights' or 'outputs', got {bc!r}")
        if self.damp < 0 or self.iterations < 1:
            raise ConfigError(
                f"damp must be >= 0 and iterations >= 1, got {self.damp}, {self.iterations}"
            )
        if self.max_rows < 16:
            raise ConfigError(f"max_rows must be >= 16, got {self.max_rows}")
        if self.weight_budget is not None and (
            isinstance(self.weight_budget, bool) or int(self.weight_budget) <= 0
        ):
            raise ConfigError(
                f"weight_budget must be a positive byte count, got {self.weight_budget}"
            )
        object.__setattr__(self, "bit_choices", tuple(sorted({int(b) for b in self.bit_choices})))
        if not self.bit_choices:
            raise ConfigError("bit_choices must name at least one width")
        for b in self.bit_choices:
            check_bits(b)

    @property
    def needs_data(self) -> bool:
        """Whether a step uses calibration data (mixed precision measures layer errors on it)."""
        return (
            self.layerwise
            or self.bias_correction != "none"
            or self.weight_budget is not None
            or self.range_search
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["bit_choices"] = list(self.bit_choices)
        return d


PTQ_PIPELINE = {
    "cle": True,
    "cle_activations": True,
    "layerwise": True,
    "sequential": True,
    "bias_correction": "outputs",
}
"""The whole PTQ pipeline, in seed 004's order (``PTQConfig(**PTQ_PIPELINE)``; the CLI's
``--ptq``, the accuracy benchmark's "PTQ" rows)."""


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """How to quantize a model's weights.

    Parameters
    ----------
    weight : SchemeConfig, str or dict
        The default weight scheme (``"kmeans"``, a config, or a ``to_dict()`` dict); its
        ``axis`` is ignored, the layer's output-channel axis is used.
    granularity : {"channel", "tensor", "group", "shared"}
        One codebook per output channel, per tensor, or per ``group_size`` weights along
        each channel's reduction dimension; ``"shared"``: one level shape per tensor
        scaled per output channel (:attr:`tvmq.schemes.SchemeConfig.shared`), the
        smallest tables for integer kernels.
    group_size : int, optional
        Required with ``granularity="group"``.
    overrides : tuple of (pattern, dict)
        Per-layer scheme options, e.g. ``(("layer0_*", {"bits": 8}),)``; later entries win.
        A dict may set ``scheme`` to switch scheme.
    skip : tuple of str
        Layers left in float: name patterns, or ``"first"`` / ``"last"``.
    activation : ActivationConfig or dict, optional
        Quantize the inputs of quantized layers (needs calibration data); None keeps
        activations in float32.
    ptq : PTQConfig or dict
        Post-training steps on calibration data (:class:`PTQConfig`); off by default.
    """

    weight: Any = field(default_factory=lambda: make_config("kmeans", bits=4))
    granularity: str = "channel"
    group_size: int | None = None
    overrides: tuple[tuple[str, dict], ...] = ()
    skip: tuple[str, ...] = ()
    activation: ActivationConfig | None = None
    ptq: PTQConfig = field(default_factory=PTQConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", make_config(self.weight))
        if isinstance(self.ptq, dict):
            object.__setattr__(self, "ptq", PTQConfig(**self.ptq))
        if isinstance(self.activation, dict):
            object.__setattr__(self, "activation", ActivationConfig(**self.activation))
        if self.granularity not in _GRANULARITIES:
            raise ConfigError(
                f"granularity must be one of {_GRANULARITIES}, got {self.granularity!r}"
            )
        if (self.granularity == "group") != (self.group_size is not None):
            raise ConfigError("group_size is required with granularity='group', and only then")
        if self.ptq.range_search and self.activation is None:
            raise ConfigError("ptq range_search needs quantized activations (activation=...)")
        object.__setattr__(self, "overrides", tuple((str(p), dict(o)) for p, o in self.overrides))
        object.__setattr__(self, "skip", tuple(self.skip))
        for pattern, opts in self.overrides:  # validate now, not halfway through a model
            self._scheme_for(opts, axis=None)
            if not isinstance(pattern, str):
                raise ConfigError(f"override pattern must be a string, got {pattern!r}")

    def _scheme_for(self, opts: dict, axis: int | None) -> SchemeConfig:
        opts = dict(opts)
        name = opts.pop("scheme", self.weight.name)
        base = self.weight.to_dict() if name == self.weight.name else {"scheme": name}
        base.update(opts)
        gran = {"axis": axis, "group_size": self.group_size}
        if self.granularity == "tensor":
            gran = {"axis": None, "group_size": None, "shared": False}
        elif self.granularity == "shared":
            gran = {"axis": axis, "group_size": None, "shared": True}
        base.update(gran)
        return make_config(base)

    def for_layer(self, name: str, index: int, count: int, axis: int) -> SchemeConfig | None:
        """The scheme config for layer ``name`` (``index`` of ``count``), or None to skip it."""
        for pattern in self.skip:
            if (
                (pattern == "first" and index == 0)
                or (pattern == "last" and index == count - 1)
                or fnmatch.fnmatchcase(name, pattern)
            ):
                return None
        opts: dict = {}
        for pattern, o in self.overrides:
            if fnmatch.fnmatchcase(name, pattern):
                opts.update(o)
        return self._scheme_for(opts, axis)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (stored in artifacts)."""
        return {
            "version": CONFIG_VERSION,
            "weight": self.weight.to_dict(),
            "granularity": self.granularity,
            "group_size": self.group_size,
            "overrides": [[p, o] for p, o in self.overrides],
            "skip": list(self.skip),
            "activation": None if self.activation is None else self.activation.to_dict(),
            "ptq": self.ptq.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        if version > CONFIG_VERSION:
            raise ConfigError(
                f"config version {version} is newer than this tvmq ({CONFIG_VERSION})"
            )
        d["overrides"] = tuple(tuple(x) for x in d.get("overrides", ()))
        d["skip"] = tuple(d.get("skip", ()))
        return cls(**d)


PRESETS: dict[str, QuantConfig] = {
    "w8-uniform": QuantConfig(weight={"scheme": "uniform", "bits": 8}),
    "w4-uniform": QuantConfig(weight={"scheme": "uniform", "bits": 4}),
    "w4-kmeans": QuantConfig(weight={"scheme": "kmeans", "bits": 4}),
    "w4-quantile": QuantConfig(weight={"scheme": "quantile", "bits": 4}),
    "w4-nf": QuantConfig(weight={"scheme": "nf", "bits": 4}),
    "w3-kmeans": QuantConfig(weight={"scheme": "kmeans", "bits": 3}),
    "w2-kmeans": QuantConfig(weight={"scheme": "kmeans", "bits": 2}),
    "tfx8": QuantConfig(weight={"scheme": "tfx", "bits": 8}, granularity="tensor"),
    "w8-uniform-a8": QuantConfig(weight={"scheme": "uniform", "bits": 8}, activation={}),
    "w4-uniform-a8": QuantConfig(weight={"scheme": "uniform", "bits": 4}, activation={}),
    "w4-kmeans-a8": QuantConfig(weight={"scheme": "kmeans", "bits": 4}, activation={}),
    "w4-quantile-a8": QuantConfig(weight={"scheme": "quantile", "bits": 4}, activation={}),
    "w4-kmeans-a4": QuantConfig(weight={"scheme": "kmeans", "bits": 4}, activation={"bits": 4}),
    "w2-kmeans-a8": QuantConfig(weight={"scheme": "kmeans", "bits": 2}, activation={}),
    "w4-kmeans-shared-a8": QuantConfig(
        weight={"scheme": "kmeans", "bits": 4}, granularity="shared", activation={}
    ),
}


def get_config(config: str | QuantConfig | dict, **changes: Any) -> QuantConfig:
    """A :class:`QuantConfig` from a preset name, a config, or a ``to_dict()`` dict."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise UnknownNameError(
                f"unknown preset {config!r}; known presets: {', '.join(sorted(PRESETS))}"
            )
        config = PRESETS[config]
    elif isinstance(config, dict):
        config = QuantConfig.from_dict(config)
    elif not isinstance(config, QuantConfig):
        raise ConfigError(f"config must be a preset name, QuantConfig or dict, got {config!r}")
    return dataclasses.replace(config, **changes) if changes else config


def fixed_point(config: str | QuantConfig | dict) -> QuantConfig:
    """``config`` with integer-only fixed-point epilogues (``requantize="fixed"``): what an
    FPU-less core runs, and what the MCU kernels are fastest with."""
    cfg = get_config(config)
    if cfg.activation is None:
        raise ConfigError("fixed-point epilogues need quantized activations (e.g. w4-kmeans-a8)")
    return dataclasses.replace(
        cfg, activation=dataclasses.replace(cfg.activation, requantize="fixed")
    )
