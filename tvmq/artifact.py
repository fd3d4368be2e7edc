"""The quantized-model artifact: one ``.tvmq`` file that ``tvmq quantize -o`` writes and
every later step (``eval``, ``tune``, ``deploy``, ``report``) reads.

Format (version :data:`FORMAT_VERSION`): a ZIP archive holding

``manifest.json``
    ``format``, ``format_version``, the tvmq and TVM versions that wrote it, the source
    model's file name and SHA-256, the model's inputs, the layout, the config, and for
    every other member its size and SHA-256.
``config.json``
    :meth:`tvmq.config.QuantConfig.to_dict`.
``layers.json``
    The per-layer reports of :class:`relay_passes.AnnotateQuant`.
``annotated.json``
    The annotated Relax module (``quant.lut_decode`` calls on packed-code constants) in
    TVM's own JSON form (:func:`tvm.ir.save_json`): this is what the model runs from.
``float.json``
    The imported float module, for float-vs-quantized comparisons and reports.
``weights.npz``
    The same packed codes and level tables as plain arrays (``<layer>.codes``,
    ``<layer>.levels``, ``<layer>.spec`` = shape, bits, axis, group size), for other tools.

Members are stored with fixed timestamps in a fixed order, so the same model and config
give the same bytes. :func:`save` writes through a temporary file and a rename (a reader
never sees half an artifact); :func:`load` checks the format, the version, every member's
size and hash, and parses defensively: anything malformed is a :class:`~tvmq.errors.
FormatError` naming the problem.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError, TvmqError

FORMAT = "tvmq-artifact"
FORMAT_VERSION = 1
SUFFIX = ".tvmq"
MAX_MEMBER_BYTES = 1 << 30  # a member larger than this is refused, not inflated
_MEMBERS = ("config.json", "layers.json", "annotated.json", "float.json", "weights.npz")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _weights(annotated) -> list[tuple[Any, Any]]:
    """``(call, spec)`` of every ``quant.lut_decode`` in ``main``, in binding order."""
    from tvm import relax

    from .ops import is_lut_decode, spec_of

    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and is_lut_decode(expr):
            found.append((expr, spec_of(expr)))

    relax.analysis.post_order_visit(annotated["main"], visit)
    return found


def weight_tables(qm) -> dict[str, dict[str, Any]]:
    """Per quantized layer: ``{"codes": packed uint8, "levels": float32 [groups, K],
    "shape", "bits", "axis", "group_size"}``, keyed by layer name (graph order)."""
    names = [r.name for r in qm.layers if r.scheme is not None]
    sites = _weights(qm.annotated)
    if len(names) != len(sites):  # e.g. a module edited after quantization
        names = [f"weight{i}" for i in range(len(sites))]
    out = {}
    for name, (call, spec) in zip(names, sites):
        out[name] = {
            "codes": call.args[0].value.numpy(),
            "levels": call.args[1].value.numpy(),
            "shape": list(spec.shape),
            "bits": spec.bits,
            "axis": -1 if spec.axis is None else spec.axis,
            "group_size": spec.group_size or 0,
        }
    return out


def _inputs(mod) -> list[dict]:
    return [
        {"name": p.name, "shape": [int(s) for s in p.ty.shape], "dtype": str(p.ty.dtype)}
        for p in mod["main"].params
    ]


def to_bytes(qm, *, source: str | Path | None = None, layout: str | None = None) -> bytes:
    """The artifact of ``qm`` as bytes (see the module doc)."""
    import tvm

    from . import __version__

    tables = weight_tables(qm)
    npz = io.BytesIO()
    arrays = {}
    for name, t in tables.items():
        arrays[f"{name}.codes"] = t["codes"]
        arrays[f"{name}.levels"] = t["levels"]
        arrays[f"{name}.spec"] = np.array(
            [*t["shape"], t["bits"], t["axis"], t["group_size"]], np.int64
        )
    np.savez(npz, **arrays)
    members = {
        "config.json": json.dumps(qm.config.to_dict(), indent=1, sort_keys=True).encode(),
        "layers.json": json.dumps([r.to_dict() for r in qm.layers], indent=1).encode(),
        "annotated.json": tvm.ir.save_json(qm.annotated).encode(),
        "float.json": tvm.ir.save_json(qm.float_module).encode(),
        "weights.npz": npz.getvalue(),
    }
    src = None
    if source is not None and Path(source).is_file():
        src = {"name": Path(source).name, "sha256": _sha256(Path(source).read_bytes())}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tvmq_version": __version__,
        "tvm_version": tvm.__version__,
        "source": src,
        "layout": layout,
        "inputs": _inputs(qm.float_module),
        "config": qm.config.to_dict(),
        "quant_weight_bytes": sum(r.quant_bytes for r in qm.layers),
        "float_weight_bytes": sum(r.float_bytes for r in qm.layers),
        "files": {n: {"bytes": len(d), "sha256": _sha256(d)} for n, d in members.items()},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        head = ("manifest.json", json.dumps(manifest, indent=1).encode())
        for name, data in [head, *members.items()]:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def save(qm, path: str | Path, **kw) -> Path:
    """Write ``qm`` as an artifact to ``path`` atomically; see :func:`to_bytes`."""
    from .io import atomic_write_bytes

    path = Path(path)
    if path.is_dir():
        raise TvmqError(f"{path} is a directory; give a file name such as model{SUFFIX}")
    return atomic_write_bytes(path, to_bytes(qm, **kw))


def is_artifact(path: str | Path) -> bool:
    """True when ``path`` is a file that starts like a ZIP archive (a ``.tvmq`` artifact or
    something claiming to be one); model files (ONNX, TFLite) never do."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(4) == b"PK\x03\x04" or p.suffix == SUFFIX


def _read_members(path: Path) -> tuple[dict, dict[str, bytes]]:
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        msg = f"{path} is not a tvmq artifact (not a readable archive: {exc})"
        raise FormatError(msg) from None
    with z:
        infos = {i.filename: i for i in z.infolist()}
        if "manifest.json" not in infos:
            raise FormatError(f"{path} is not a tvmq artifact (no manifest.json)")
        out = {}
        for name in ("manifest.json", *_MEMBERS):
            info = infos.get(name)
            if info is None:
                raise FormatError(f"{path}: artifact member {name} is missing")
            if info.file_size > MAX_MEMBER_BYTES:
                raise FormatError(f"{path}: member {name} claims {info.file_size} bytes; refused")
            try:
                out[name] = z.read(info)
            except Exception as exc:  # CRC, truncation, bad compression data
                raise FormatError(f"{path}: member {name} is corrupt ({exc})") from None
    try:
        manifest = json.loads(out.pop("manifest.json"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: manifest.json is not JSON ({exc})") from None
    return manifest, out


def read_manifest(path: str | Path) -> dict:
    """The checked manifest of the artifact at ``path`` (format, version, member hashes)."""
    path = Path(path)
    if not path.is_file():
        raise TvmqError(f"{path}: no such file")
    manifest, members = _read_members(path)
    _check_manifest(path, manifest, members)
    return manifest


def _check_manifest(path: Path, manifest: Any, members: dict[str, bytes]) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FormatError(f"{path}: manifest does not describe a {FORMAT}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FormatError(f"{path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise FormatError(
            f"{path} was written by tvmq {manifest.get('tvmq_version', '?')} in artifact "
            f"format {version}; this tvmq reads format {FORMAT_VERSION} and older: upgrade tvmq"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise FormatError(f"{path}: manifest has no file list")
    for name, data in members.items():
        entry = files.get(name)
        if not isinstance(entry, dict):
            raise FormatError(f"{path}: manifest does not list {name}")
        if entry.get("bytes") != len(data) or entry.get("sha256") != _sha256(data):
            raise FormatError(f"{path}: {name} does not match its hash in the manifest")


def _json(path: Path, name: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: {name} is not JSON ({exc})") from None


def _crash_check(text: str, timeout_s: float = 60.0) -> str | None:
    """Parse ``text`` with :func:`tvm.ir.load_json` in a forked child first: TVM's reader
    trusts its input, and well-formed JSON with wrong node references can crash the process
    (found by fuzzing: SIGSEGV); the child also runs Relax's well-formedness check. Returns
    what is wrong, or None when the module parsed and is well formed (or merely raised: the
    parent then reports TVM's own message).
    Costs one extra parse (milliseconds to a fraction of a second); skipped where there is
    no ``fork``."""
    import tvm

    if not hasattr(os, "fork"):
        return None
    pid = os.fork()
    if pid == 0:  # the child: parse, report by exit status only
        code = 0
        try:
            mod = tvm.ir.load_json(text)
        except BaseException:
            os._exit(3)
        try:
            if isinstance(mod, tvm.IRModule):
                tvm.relax.analysis.well_formed(mod)  # raises on the first violation
        except BaseException:
            code = 4
        os._exit(code)
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"TVM's reader did not finish in {timeout_s:.0f} s"
        time.sleep(0.002)
    if os.WIFSIGNALED(status):
        return f"it crashes TVM's reader (signal {os.WTERMSIG(status)})"
    if os.WEXITSTATUS(status) == 4:
        return "the module is not well formed (relax.analysis.well_formed)"
    return None


def _module(path: Path, name: str, data: bytes):
    import tvm

    from . import ops  # noqa: F401  (registers quant.* before the IR names them)

    try:
        text = data.decode("utf-8")
        json.loads(text)  # TVM's parser is not the place to find out it is not JSON
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: {name} is not JSON ({str(exc)[:200]})") from None
    crash = _crash_check(text)
    if crash is not None:
        raise FormatError(f"{path}: {name} is not a valid TVM module: {crash}")
    try:
        mod = tvm.ir.load_json(text)
    except Exception as exc:
        raise FormatError(f"{path}: {name} is not a TVM module ({str(exc)[:200]})") from None
    if not isinstance(mod, tvm.IRModule) or "main" not in [
        gv.name_hint for gv in mod.get_global_vars()
    ]:
        raise FormatError(f"{path}: {name} is not a TVM module with a 'main' function")
    return mod


def load(path: str | Path):
    """The :class:`~tvmq.quantizer.QuantizedModel` stored at ``path``.

    Raises
    ------
    FormatError
        Not an artifact, corrupt, truncated, tampered with (hash mismatch), or written in a
        newer format.
    """
    from relay_passes import LayerReport

    from .config import QuantConfig
    from .quantizer import QuantizedModel

    path = Path(path)
    if not path.is_file():
        raise TvmqError(f"{path}: no such file")
    manifest, members = _read_members(path)
    _check_manifest(path, manifest, members)
    try:
        config = QuantConfig.from_dict(_json(path, "config.json", members["config.json"]))
        layers = [
            LayerReport(**dict(d, shape=tuple(d["shape"])))
            for d in _json(path, "layers.json", members["layers.json"])
        ]
    except FormatError:
        raise
    except (TvmqError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise FormatError(f"{path}: bad config or layer list ({exc})") from None
    annotated = _module(path, "annotated.json", members["annotated.json"])
    float_module = _module(path, "float.json", members["float.json"])
    layout = manifest.get("layout")
    return QuantizedModel(
        float_module=float_module,
        annotated=annotated,
        config=config,
        layers=layers,
        layout=layout if layout in ("NHWC", "NCHW") else None,
        manifest=manifest,
    )
