"""The ``.tvmq`` artifact: round trip, determinism, atomic writes, and a reader that turns
every malformed file into a FormatError (fuzzed with hypothesis)."""

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_quantize_e2e import onnx_model

import tvmq
from tvmq import artifact
from tvmq.errors import FormatError, TvmqError

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(quantized model, artifact path, artifact bytes) of a small conv/depthwise/dense model
    with int8 activations (so calibration results are in the artifact too)."""
    model = onnx_model()
    qm0 = tvmq.quantize(model, "w4-kmeans")
    shape = qm0.input_shapes[0]
    calib = list(RNG.standard_normal((8, *shape)).astype(np.float32))
    qm = tvmq.quantize(model, "w4-kmeans-a8", calib=calib)
    path = qm.save(tmp_path_factory.mktemp("art") / "m.tvmq")
    return qm, path, path.read_bytes()


def test_round_trip_runs_bit_identically(saved):
    qm, path, _ = saved
    back = tvmq.load_artifact(path)
    assert back.config == qm.config
    assert [r.to_dict() for r in back.layers] == [r.to_dict() for r in qm.layers]
    x = RNG.standard_normal(qm.input_shapes[0]).astype(np.float32)
    np.testing.assert_array_equal(back.run(x), qm.run(x))
    np.testing.assert_array_equal(back.run_float(x), qm.run_float(x))


def test_manifest_lists_versions_hashes_and_weights(saved):
    qm, path, data = saved
    man = artifact.read_manifest(path)
    assert man["format"] == "tvmq-artifact" and man["format_version"] == artifact.FORMAT_VERSION
    assert man["tvmq_version"] == tvmq.__version__ and man["tvm_version"]
    assert man["inputs"][0]["shape"] == list(qm.input_shapes[0])
    assert set(man["files"]) == set(artifact._MEMBERS)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        npz = np.load(io.BytesIO(z.read("weights.npz")))
        for name, t in artifact.weight_tables(qm).items():
            np.testing.assert_array_equal(npz[f"{name}.codes"], t["codes"])
            np.testing.assert_array_equal(npz[f"{name}.levels"], t["levels"])
            # 4-bit codes: two per byte, plus the one padding byte of the packing layout
            assert t["codes"].size == (np.prod(t["shape"]) + 1) // 2 + 1
    assert man["quant_weight_bytes"] == qm.report()["quant_weight_bytes"]


def test_same_model_same_bytes(saved, tmp_path):
    qm, _, data = saved
    assert qm.save(tmp_path / "again.tvmq").read_bytes() == data


def test_failed_write_leaves_the_old_file_and_no_temporary(saved, tmp_path, monkeypatch):
    qm = saved[0]
    target = tmp_path / "m.tvmq"
    target.write_bytes(b"old")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(artifact.np, "savez", boom)
    with pytest.raises(RuntimeError):
        qm.save(target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tvmq"]


def _rezip(members: dict[str, bytes], manifest: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        if manifest is not None:
            z.writestr("manifest.json", json.dumps(manifest))
        for name, blob in members.items():
            z.writestr(name, blob)
    return buf.getvalue()


def _members(data: bytes) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        m = {n: z.read(n) for n in z.namelist()}
    return json.loads(m.pop("manifest.json")), m


def test_newer_format_is_refused_with_upgrade_hint(saved, tmp_path):
    _, _, data = saved
    man, members = _members(data)
    man["format_version"] = artifact.FORMAT_VERSION + 1
    p = tmp_path / "new.tvmq"
    p.write_bytes(_rezip(members, man))
    with pytest.raises(FormatError, match="upgrade tvmq"):
        tvmq.load_artifact(p)


def test_tampered_member_fails_its_hash(saved, tmp_path):
    _, _, data = saved
    man, members = _members(data)
    members["config.json"] = members["config.json"].replace(b'"bits": 4', b'"bits": 3')
    p = tmp_path / "t.tvmq"
    p.write_bytes(_rezip(members, man))
    with pytest.raises(FormatError, match=r"config\.json does not match its hash"):
        tvmq.load_artifact(p)


def test_model_files_and_missing_files_are_not_artifacts(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(onnx_model().SerializeToString())
    assert not artifact.is_artifact(p)
    with pytest.raises(FormatError, match="not a tvmq artifact"):
        tvmq.load_artifact(p)
    with pytest.raises(TvmqError, match="no such file"):
        tvmq.load_artifact(tmp_path / "absent.tvmq")


FUZZ_CASES: dict[str, int] = {"bytes": 0, "members": 0}
FUZZ_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load_or_format_error(path) -> None:
    try:
        tvmq.load_artifact(path)
    except FormatError:
        pass


@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzz_raw_bytes(saved, tmp_path, data):
    """Truncations, byte flips and splices of a valid artifact: FormatError or a clean load
    (a flip in a stored-but-unused zip field), never another exception or a crash."""
    blob = bytearray(saved[2])
    kind = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    at = data.draw(st.integers(0, len(blob) - 1))
    if kind == "truncate":
        blob = blob[:at]
    elif kind == "flip":
        for i in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=8)):
            blob[i] ^= data.draw(st.integers(1, 255))
    else:
        blob[at : at + 16] = data.draw(st.binary(min_size=0, max_size=32))
    p = tmp_path / "f.tvmq"
    p.write_bytes(bytes(blob))
    FUZZ_CASES["bytes"] += 1
    _load_or_format_error(p)


@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzz_members_with_valid_hashes(saved, tmp_path, data):
    """Mutate one member *and* fix its hash in the manifest (a crafted file): TVM's own JSON
    reader can segfault on such input, which the reader must catch (see
    ``artifact._crash_check``)."""
    man, members = _members(saved[2])
    name = data.draw(st.sampled_from([*artifact._MEMBERS, "manifest.json"]))
    blob = bytearray(json.dumps(man).encode() if name == "manifest.json" else members[name])
    digits = [i for i, c in enumerate(blob) if 48 <= c <= 57]
    if digits and data.draw(st.booleans()):  # keeps JSON valid: renumbers node references
        for i in data.draw(st.lists(st.sampled_from(digits), min_size=1, max_size=5)):
            blob[i] = data.draw(st.integers(48, 57))
    else:
        at = data.draw(st.integers(0, len(blob) - 1))
        span = data.draw(st.integers(1, 64))
        junk = st.binary(max_size=span) | st.text(max_size=8).map(str.encode)
        blob[at : at + span] = data.draw(junk)
    if name == "manifest.json":
        p_bytes = _rezip(members)  # then add the mutated manifest verbatim
        buf = io.BytesIO(p_bytes)
        with zipfile.ZipFile(buf, "a") as z:
            z.writestr("manifest.json", bytes(blob))
        out = buf.getvalue()
    else:
        members[name] = bytes(blob)
        man["files"][name] = {"bytes": len(blob), "sha256": artifact._sha256(bytes(blob))}
        out = _rezip(members, man)
    p = tmp_path / "g.tvmq"
    p.write_bytes(out)
    FUZZ_CASES["members"] += 1
    _load_or_format_error(p)


def test_fuzzers_really_ran():
    """Both fuzzers above tried their full budget (300 cases in all)."""
    assert FUZZ_CASES["bytes"] >= 150 and FUZZ_CASES["members"] >= 150
