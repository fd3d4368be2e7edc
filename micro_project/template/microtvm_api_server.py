#!/usr/bin/env python3
"""tvmq's Project API server: microTVM's protocol, reimplemented with the standard library.

JSON-RPC 2.0, one message per line on stdin/stdout (protocol version 1). Methods:
``server_info_query``, ``generate_project``, ``build``, ``flash``, ``open_transport``,
``close_transport``, ``read_transport``, ``write_transport``. Platforms (``boards.json``):
``host`` (the model as a process built with gcc) and QEMU boards (bare-metal Cortex-M,
arm-none-eabi-gcc + picolibc semihosting, ``qemu-system-arm -icount shift=0``).

The "model library" handed to ``generate_project`` is a directory with ``tvmq_model.c`` and
``tvmq_model.h`` (``tvmq.micro.export_model``). A generated project is self-contained: this
server, ``boards.json``, ``src/driver.c`` (the line protocol the transport carries, see its
header) and ``model/``. Run ``python3 microtvm_api_server.py`` inside a project to serve it.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

PROTOCOL_VERSION = 1
HERE = Path(__file__).resolve().parent
IS_TEMPLATE = not (HERE / "model").exists()
BOARDS = json.loads((HERE / "boards.json").read_text())
DEFAULT_BOARD = "mps2-an386"
PICOLIBC_SPECS = Path("/usr/lib/picolibc/arm-none-eabi/picolibc.specs")

# JSON-RPC error codes
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, SERVER_ERROR = (
    -32700, -32600, -32601, -32602, -32000,
)  # fmt: skip

OPTIONS = [
    {
        "name": "board",
        "type": "str",
        "choices": sorted(BOARDS),
        "default": DEFAULT_BOARD,
        "optional": ["generate_project", "build", "flash", "open_transport"],
        "help": "target board: 'host' or a QEMU machine",
    },
    {
        "name": "verbose",
        "type": "bool",
        "default": False,
        "optional": ["build"],
        "help": "print compiler commands",
    },
]


class ProjectAPIError(Exception):
    """An error reported to the client as a JSON-RPC error object."""

    def __init__(self, message: str, code: int = SERVER_ERROR):
        super().__init__(message)
        self.code = code


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ProjectAPIError(f"{name} not found: install the Debian package '{package}'")
    return path


def _sizes(binary: Path, platform: str) -> dict:
    """``{"text", "data", "bss"}`` bytes of a built binary (binutils ``size``); flash is
    text + data, static RAM data + bss. Empty when ``size`` is missing."""
    tool = shutil.which("arm-none-eabi-size" if platform == "qemu" else "size")
    if tool is None:
        return {}
    res = subprocess.run([tool, str(binary)], capture_output=True, text=True)
    if res.returncode != 0:
        return {}
    text, data, bss = (int(v) for v in res.stdout.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


class Handler:
    """The eight calls of the Project API."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.log_path = HERE / "build" / "device.log"

    # -- project ---------------------------------------------------------------------
    def _board(self, options: dict | None) -> tuple[str, dict]:
        options = options or {}
        name = options.get("board")
        if name is None and (HERE / "project.json").exists():
            name = json.loads((HERE / "project.json").read_text()).get("board")
        name = name or DEFAULT_BOARD
        if name not in BOARDS:
            raise ProjectAPIError(
                f"unknown board {name!r}; known: {', '.join(sorted(BOARDS))}", INVALID_PARAMS
            )
        return name, BOARDS[name]

    def server_info_query(self, tvm_version: str = "") -> dict:
        return {
            "platform_name": "tvmq",
            "is_template": IS_TEMPLATE,
            "model_library_format_path": "" if IS_TEMPLATE else str(HERE / "model"),
            "project_options": OPTIONS,
            "protocol_version": PROTOCOL_VERSION,
        }

    def generate_project(
        self,
        model_library_format_path: str,
        standalone_crt_dir: str | None,
        project_dir: str,
        options: dict | None = None,
    ) -> dict:
        if not IS_TEMPLATE:
            raise ProjectAPIError("generate_project is served by the template, not a project")
        model = Path(model_library_format_path)
        for name in ("tvmq_model.c", "tvmq_model.h"):
            if not (model / name).is_file():
                raise ProjectAPIError(f"{model} has no {name}", INVALID_PARAMS)
        board, _ = self._board(options)
        dest = Path(project_dir)
        if dest.exists() and any(dest.iterdir()):
            raise ProjectAPIError(f"project_dir {dest} exists and is not empty", INVALID_PARAMS)
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "src").mkdir(parents=True)
        (tmp / "model").mkdir()
        shutil.copy2(HERE / "microtvm_api_server.py", tmp / "microtvm_api_server.py")
        shutil.copy2(HERE / "boards.json", tmp / "boards.json")
        shutil.copy2(HERE / "src" / "driver.c", tmp / "src" / "driver.c")
        shutil.copy2(HERE / "src" / "tvmq_protocol.h", tmp / "src" / "tvmq_protocol.h")
        for name in ("tvmq_model.c", "tvmq_model.h"):
            shutil.copy2(model / name, tmp / "model" / name)
        if BOARDS[board]["platform"] == "zephyr":
            zephyr = HERE / "src" / "zephyr"
            shutil.copy2(zephyr / "main.c", tmp / "src" / "main.c")
            shutil.copy2(zephyr / "CMakeLists.txt", tmp / "CMakeLists.txt")
            shutil.copy2(zephyr / "prj.conf", tmp / "prj.conf")
            shutil.copytree(zephyr / "boards", tmp / "boards")
        (tmp / "project.json").write_text(json.dumps({"board": board}, indent=2) + "\n")
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)  # atomic: a project exists whole or not at all
        return {}

    @staticmethod
    def _project_only(method: str) -> None:
        if IS_TEMPLATE:
            raise ProjectAPIError(
                f"{method} is served by a generated project, not the template: call "
                "generate_project, then run the server inside the project"
            )

    def _west(self) -> str:
        missing = []
        if not os.environ.get("ZEPHYR_BASE"):
            missing.append("ZEPHYR_BASE (a Zephyr source tree, e.g. from 'west init')")
        west = shutil.which("west")
        if west is None:
            missing.append("west (pip install west)")
        if missing:
            raise ProjectAPIError(
                "building a Zephyr project needs "
                + " and ".join(missing)
                + ", plus the Zephyr SDK toolchain; the generated project in "
                + f"{HERE} is complete and builds with 'west build -b <board> {HERE}'"
            )
        return west

    def build(self, options: dict | None = None) -> dict:
        self._project_only("build")
        board, info = self._board(options)
        if info["platform"] == "zephyr":
            west = self._west()
            cmd = [west, "build", "-b", info["zephyr_board"], "-d", str(HERE / "build"), str(HERE)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise ProjectAPIError(f"west build failed:\n{res.stderr[-3000:]}")
            return {}
        out = HERE / "build"
        out.mkdir(exist_ok=True)
        sources = [str(HERE / "src" / "driver.c"), str(HERE / "model" / "tvmq_model.c")]
        flags = ["-O2", "-std=c99", "-ffp-contract=off", "-Wall", "-I", str(HERE / "model")]
        if info["platform"] == "host":
            cmd = [_tool("gcc", "gcc"), *flags, *sources, "-o", str(out / "tvmq_host"), "-lm"]
        else:
            if not PICOLIBC_SPECS.exists():
                raise ProjectAPIError(
                    "picolibc not found: install the Debian package 'picolibc-arm-none-eabi'"
                )
            mem = info.get("memory", {})
            num, den = info.get("instr_per_tick", [40, 1])
            cmd = [
                _tool("arm-none-eabi-gcc", "gcc-arm-none-eabi"), *flags, *info["cflags"],
                "-DTVMQ_SYSTICK", f"-DTVMQ_INSTR_NUM={num}", f"-DTVMQ_INSTR_DEN={den}",
                "--specs=picolibc.specs", "--oslib=semihost",
                f"-Wl,--defsym=__flash={mem.get('flash', 0)}",
                f"-Wl,--defsym=__flash_size={mem.get('flash_size', 0x400000)}",
                f"-Wl,--defsym=__ram={mem.get('ram', 0x20000000)}",
                f"-Wl,--defsym=__ram_size={mem.get('ram_size', 0x400000)}",
                *sources, "-o", str(out / f"tvmq_{board}.elf"), "-lm",
            ]  # fmt: skip
        if (options or {}).get("verbose"):
            print(" ".join(cmd), file=sys.stderr)
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise ProjectAPIError(f"build failed:\n{res.stderr[-3000:]}")
        binary = self._binary(board, info)
        return {"binary": str(binary), "sizes": _sizes(binary, info["platform"])}

    def _binary(self, board: str, info: dict) -> Path:
        name = "tvmq_host" if info["platform"] == "host" else f"tvmq_{board}.elf"
        path = HERE / "build" / name
        if not path.exists():
            raise ProjectAPIError(f"{path} does not exist: call build first")
        return path

    def flash(self, options: dict | None = None) -> dict:
        # host: nothing to write; QEMU loads the ELF when the transport opens.
        self._project_only("flash")
        board, info = self._board(options)
        if info["platform"] == "zephyr":
            if board.startswith("qemu_"):
                return {}  # emulated: 'west build -t run' starts it
            res = subprocess.run(
                [self._west(), "flash", "-d", str(HERE / "build")], capture_output=True, text=True
            )
            if res.returncode != 0:
                raise ProjectAPIError(f"west flash failed:\n{res.stderr[-3000:]}")
            return {}
        self._binary(board, info)
        return {}

    # -- transport -------------------------------------------------------------------
    def open_transport(self, options: dict | None = None) -> dict:
        self._project_only("open_transport")
        if self.proc is not None:
            raise ProjectAPIError("transport is already open")
        board, info = self._board(options)
        if info["platform"] == "zephyr":
            if not board.startswith("qemu_"):
                raise ProjectAPIError(
                    f"open_transport on {board} needs its serial port, which this server does "
                    "not open (the standard library has no serial API); use the board's "
                    "console at 115200 baud with the line protocol of src/main.c"
                )
            cmd = [self._west(), "build", "-d", str(HERE / "build"), "-t", "run"]
        elif info["platform"] == "host":
            cmd = [str(self._binary(board, info))]
        else:
            binary = self._binary(board, info)
            cmd = [
                _tool("qemu-system-arm", "qemu-system-arm"), "-M", info["machine"],
                "-display", "none", "-serial", "none", "-monitor", "none",
                "-chardev", "stdio,id=con,mux=off",
                "-semihosting-config", "enable=on,target=native,chardev=con",
                "-icount", "shift=0", "-kernel", str(binary),
            ]  # fmt: skip
        self.log_path.parent.mkdir(exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        return {
            "timeouts": {
                "session_start_retry_timeout_sec": 0,
                "session_start_timeout_sec": 10,
                "session_established_timeout_sec": 60,
            }
        }

    def close_transport(self) -> dict:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        return {}

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def read_transport(self, n: int, timeout_sec: float | None = None) -> dict:
        if self.proc is None:
            raise ProjectAPIError("transport is not open")
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout_sec)
        if not ready:
            raise ProjectAPIError(
                f"read timed out after {timeout_sec} s; device log:\n{self._log_tail()}"
            )
        data = os.read(fd, n)
        if not data:
            code = self.proc.poll()
            raise ProjectAPIError(
                f"device closed the transport (exit {code}); log:\n{self._log_tail()}"
            )
        return {"data": base64.b64encode(data).decode("ascii")}

    def write_transport(self, data: str, timeout_sec: float | None = None) -> dict:
        if self.proc is None:
            raise ProjectAPIError("transport is not open")
        try:
            self.proc.stdin.write(base64.b64decode(data, validate=True))
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise ProjectAPIError(f"write failed: {exc}; device log:\n{self._log_tail()}") from exc
        return {}


METHODS = (
    "server_info_query", "generate_project", "build", "flash",
    "open_transport", "close_transport", "read_transport", "write_transport",
)  # fmt: skip


def handle_line(handler: Handler, line: str) -> dict | None:
    """One JSON-RPC request line -> the response object (None for a notification)."""
    try:
        req = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": str(exc)}}
    if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or "method" not in req:
        return {
            "jsonrpc": "2.0",
            "id": req.get("id") if isinstance(req, dict) else None,
            "error": {"code": INVALID_REQUEST, "message": "not a JSON-RPC 2.0 request"},
        }
    rid, method, params = req.get("id"), req["method"], req.get("params", {})
    if method not in METHODS:
        error = {"code": METHOD_NOT_FOUND, "message": f"unknown method {method!r}"}
        return {"jsonrpc": "2.0", "id": rid, "error": error}
    if not isinstance(params, dict):
        error = {"code": INVALID_PARAMS, "message": "params must be an object"}
        return {"jsonrpc": "2.0", "id": rid, "error": error}
    try:
        result = getattr(handler, method)(**params)
    except TypeError as exc:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": INVALID_PARAMS, "message": str(exc)}}
    except ProjectAPIError as exc:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": exc.code, "message": str(exc)}}
    except Exception as exc:  # a bug: report it, keep serving
        error = {"code": SERVER_ERROR, "message": f"{type(exc).__name__}: {exc}"}
        return {"jsonrpc": "2.0", "id": rid, "error": error}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def serve(infile=sys.stdin, outfile=sys.stdout) -> None:
    """Serve requests until end of input; always closes the transport (stops the device
    process) on the way out. A last line without its newline is half a message from a
    client that went away: it is dropped, not answered; a client that stops reading ends
    the loop quietly."""
    handler = Handler()
    try:
        for line in infile:
            if not line.endswith("\n"):
                break
            if not line.strip():
                continue
            response = handle_line(handler, line)
            try:
                outfile.write(json.dumps(response) + "\n")
                outfile.flush()
            except (BrokenPipeError, OSError, ValueError):  # ValueError: closed file
                break
    finally:
        handler.close_transport()


if __name__ == "__main__":
    serve()
