"""Client side of the Project API: drive a generated device project like microTVM did.

``Session(aot, board=...)`` exports the model, asks the template's Project API server
(``micro_project/template/microtvm_api_server.py``, run as a subprocess speaking JSON-RPC
over pipes) to generate a project, then the project's own server to build, flash and open
the transport; :meth:`Session.run` sends one input over the transport and returns the
output and the instruction count. Every wait is bounded: a hung emulator, a crashed device
or a malformed message becomes a :class:`TvmqError` with the device log tail.
"""

from __future__ import annotations

import base64
import json
import select
import subprocess
import sys
from pathlib import Path

import numpy as np

from .errors import TvmqError
from .io import atomic_write_text

TEMPLATE = Path(__file__).resolve().parents[1] / "micro_project" / "template"


def export_model(aot, path: Path) -> Path:
    """Write the AOT model's ``tvmq_model.c`` / ``.h`` (the "model library") to ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / "tvmq_model.c", aot.source)
    atomic_write_text(path / "tvmq_model.h", aot.header)
    return path


def boards() -> dict[str, dict]:
    """The template's ``boards.json``: board name -> options (``platform``: host, qemu or
    zephyr; compiler flags...)."""
    return json.loads((TEMPLATE / "boards.json").read_text())


def generate_project(aot, board: str, project_dir: Path, timeout: float = 120.0) -> Path:
    """Generate a complete project for ``board`` from the AOT model through the template's
    Project API server (``generate_project``); returns ``project_dir``.

    For a Zephyr board this is the whole deliverable where Zephyr is not installed: a
    CMake/west application (``west build -b <board> <project_dir>``)."""
    project_dir = Path(project_dir)  # (the server refuses an unknown board, writing nothing)
    model = export_model(aot, project_dir.with_name(project_dir.name + ".model"))
    template = ProjectAPIClient(TEMPLATE, timeout)
    try:
        template.call(
            "generate_project",
            model_library_format_path=str(model),
            standalone_crt_dir=None,
            project_dir=str(project_dir),
            options={"board": board},
        )
    finally:
        template.close()
    return project_dir


class ProjectAPIClient:
    """JSON-RPC client of one Project API server process."""

    def __init__(self, server_dir: Path, timeout: float = 120.0):
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, str(server_dir / "microtvm_api_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=server_dir,
        )
        self._id = 0

    def call(self, method: str, timeout: float | None = None, **params):
        self._id += 1
        request = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": params}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise TvmqError(f"Project API server is gone ({exc})") from exc
        wait = self.timeout if timeout is None else timeout
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        if not ready:
            raise TvmqError(f"Project API call {method} got no answer within {wait} s")
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()[-1500:]
            raise TvmqError(f"Project API server exited during {method}; stderr:\n{err}")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TvmqError(f"malformed Project API reply to {method}: {line[:200]!r}") from exc
        if reply.get("id") != self._id:
            raise TvmqError(f"Project API reply id {reply.get('id')} != request id {self._id}")
        if "error" in reply:
            raise TvmqError(f"{method} failed: {reply['error'].get('message')}")
        return reply.get("result")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Session:
    """Generate, build, flash and open a device project; run inferences on it.

    Parameters
    ----------
    aot : tvmq.backend.aot.AotModel
    board : str
        ``"host"`` or a QEMU board (``boards.json``).
    project_dir : Path
        Where the project is generated (must not exist or be empty).
    timeout : float
        Seconds any single step or inference may take.
    """

    def __init__(self, aot, *, board: str, project_dir: Path, timeout: float = 60.0):
        self.aot, self.board, self.project_dir, self.timeout = (
            aot,
            board,
            Path(project_dir),
            timeout,
        )
        self.api: ProjectAPIClient | None = None
        self._buf = b""
        self.build_info: dict = {}
        """What ``build`` reported: the binary and its ``sizes`` (text, data, bss bytes)."""

    def __enter__(self) -> Session:
        generate_project(self.aot, self.board, self.project_dir, self.timeout)
        self.api = ProjectAPIClient(self.project_dir, self.timeout)
        try:
            self.build_info = self.api.call("build", options={"board": self.board}) or {}
            self.api.call("flash", options={"board": self.board})
            self.api.call("open_transport", options={"board": self.board})
        except BaseException:
            self.api.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.api is not None:
            try:
                self.api.call("close_transport", timeout=10)
            except TvmqError:
                pass
            self.api.close()
            self.api = None

    def _readline(self) -> str:
        while b"\n" not in self._buf:
            reply = self.api.call("read_transport", n=65536, timeout_sec=self.timeout)
            self._buf += base64.b64decode(reply["data"])
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("ascii", errors="replace")

    def run(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """One inference on the device: ``(output, instructions)`` (0 instructions on host)."""
        if self.api is None:
            raise TvmqError("session is not open (use it as a context manager)")
        x = np.ascontiguousarray(x, dtype=self.aot.input_dtype)
        if x.shape != self.aot.input_shape:
            raise TvmqError(f"input must have shape {self.aot.input_shape}, got {x.shape}")
        # The trailing spare newline matters on QEMU: output the device writes through
        # semihosting is only released when its next console read returns, so the line
        # after the request (ignored by the driver) lets the reply out.
        payload = b"RUN " + x.view(np.uint8).tobytes().hex().encode() + b"\n\n"
        self.api.call(
            "write_transport", data=base64.b64encode(payload).decode(), timeout_sec=self.timeout
        )
        while True:
            line = self._readline()
            if line.startswith("ERR"):
                raise TvmqError(f"device error: {line[4:]}")
            if line.startswith("OK "):
                break  # anything else is stray output (boot messages, noise): skip it
        try:
            _, instructions, data = line.split(" ", 2)
            raw = bytes.fromhex(data.strip())
            out = np.frombuffer(raw, dtype=self.aot.output_dtype).reshape(self.aot.output_shape)
        except ValueError as exc:
            raise TvmqError(f"malformed device reply: {line[:120]!r}") from exc
        return out.copy(), int(instructions)
