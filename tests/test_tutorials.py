"""Tutorials are run as a user would run them, in their fast mode; each must print the
line that shows it did its job."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
EXPECT = {
    "01_compare_schemes.py": "SQNR",
    "02_custom_scheme.py": "mulaw    accuracy",
    "03_torch_to_cortex_m.py": "equal the host TVM build bit for bit: True",
    "04_autotune.py": "bit-identical to the untuned one: True",
    "05_zephyr_project.py": "model/tvmq_model.c",
}
NEEDS = {"03_torch_to_cortex_m.py": ["torch", "qemu-system-arm", "arm-none-eabi-gcc"]}


def test_every_tutorial_is_tested():
    assert sorted(p.name for p in TUTORIALS.glob("[0-9]*.py")) == sorted(EXPECT)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_tutorial_runs(name):
    for need in NEEDS.get(name, []):
        if need == "torch" and importlib.util.find_spec("torch") is None:
            pytest.skip("needs the train extra (torch)")
        if need != "torch" and not shutil.which(need):
            pytest.skip(f"needs {need}")
    r = subprocess.run(
        [sys.executable, str(TUTORIALS / name), "--fast"], capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert EXPECT[name] in r.stdout, r.stdout[-2000:]
