"""Fuzzing the Project API message handling and the device reply parsing: any input gives
a JSON-RPC error object or a TvmqError, never a crash or a hang."""

import importlib.util
import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tvmq
from tvmq.micro import TEMPLATE, Session

spec = importlib.util.spec_from_file_location("api_server", TEMPLATE / "microtvm_api_server.py")
server = importlib.util.module_from_spec(spec)
spec.loader.exec_module(server)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
requests = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "id": st.integers() | st.none(),
     "method": st.sampled_from([*server.METHODS, "x", ""]) | st.text(max_size=10)},
    optional={"params": json_values},
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | requests.map(json.dumps))
def test_any_line_gets_a_json_rpc_answer(line):
    handler = server.Handler()
    try:
        reply = server.handle_line(handler, line)
    finally:
        handler.close_transport()
    assert reply["jsonrpc"] == "2.0" and ("result" in reply) != ("error" in reply)
    json.dumps(reply)  # serializable
    if "error" in reply:
        assert isinstance(reply["error"]["code"], int) and reply["error"]["message"]


def test_template_refuses_project_calls_and_stays_clean():
    for method in ("build", "flash", "open_transport"):
        reply = server.handle_line(
            server.Handler(), json.dumps({"jsonrpc": "2.0", "id": 1, "method": method})
        )
        assert "generated project" in reply["error"]["message"]
    assert not (TEMPLATE / "build").exists()


class _FakeAPI:
    """Stands in for the transport: replays device bytes (the parser is what is fuzzed)."""

    def __init__(self, data: bytes):
        self.data = data

    def call(self, method, **params):
        import base64

        if method == "read_transport":
            if not self.data:
                raise tvmq.TvmqError("read timed out")
            chunk, self.data = self.data[:7], self.data[7:]
            return {"data": base64.b64encode(chunk).decode()}
        return {}


class _Aot:
    input_dtype, input_shape = "float32", (2,)
    output_dtype, output_shape = "float32", (2,)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_any_device_reply_is_parsed_or_refused(reply):
    s = Session(_Aot(), board="host", project_dir=".")
    s.api = _FakeAPI(reply)
    try:
        out, n = s.run(np.zeros(2, np.float32))
        assert out.shape == (2,) and n >= 0
    except tvmq.TvmqError:
        pass
