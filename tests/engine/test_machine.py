"""engine.machine: the one description of the machine every benchmark records.

Each field is checked against a fact the test sets itself (a fake /proc/cpuinfo, core count, load,
thread count, GPU), so a field read from the wrong place fails."""

from __future__ import annotations

import io
import sys

import pytest
import torch

import engine.machine as machine
from engine.machine import cpu_model, machine_description, machine_info

CPUINFO = "processor\t: 0\nvendor_id\t: TestVendor\nmodel name\t: Test CPU 9000 @ 1.00GHz\nflags\t\t: fpu\n"


@pytest.fixture
def fake_machine(monkeypatch):
    """A machine with known answers: its /proc/cpuinfo, 37 cores, a load of 1.234, Python 3.99.1."""

    def fake_open(path, *args, **kwargs):
        assert path == "/proc/cpuinfo"
        return io.StringIO(CPUINFO)

    monkeypatch.setattr(machine, "open", fake_open, raising=False)  # the module's global shadows the builtin
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 37)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (1.234, 5.0, 6.0))
    monkeypatch.setattr(machine.platform, "python_version", lambda: "3.99.1")


def test_the_cpu_model_comes_from_proc_cpuinfo_else_from_platform(fake_machine, monkeypatch):
    assert cpu_model() == "Test CPU 9000 @ 1.00GHz"

    def unreadable(path, *args, **kwargs):
        raise PermissionError(path)

    monkeypatch.setattr(machine, "open", unreadable, raising=False)
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    monkeypatch.setattr(machine.platform, "machine", lambda: "riscv64")
    assert cpu_model() == "riscv64"
    monkeypatch.setattr(machine.platform, "processor", lambda: "TestArch")
    assert cpu_model() == "TestArch"


def test_the_description_names_the_cpu_the_cores_torch_and_the_gpu(fake_machine, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "9.8.7+test")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: f"Fake GPU {index}")
    torch.set_num_threads(3)  # the engine conftest restores the thread count after the test
    assert machine_info() == {
        "cpu": "Test CPU 9000 @ 1.00GHz",
        "cores": 37,
        "load_average_1min": 1.23,
        "python": "3.99.1",
        "torch": "9.8.7+test",
        "torch_threads": 3,
        "gpu": "Fake GPU 0",
    }
    assert machine_description() == (
        "machine: Test CPU 9000 @ 1.00GHz, 37 cores, torch 9.8.7+test (3 threads), GPU Fake GPU 0"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine_info()["gpu"] is None
    assert machine_description().endswith("(3 threads), no GPU")


def test_without_torch_imported_the_description_names_python(fake_machine, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")  # the UI benchmarks never import torch
    info = machine_info()
    assert "torch" not in info and "gpu" not in info
    assert machine_description() == "machine: Test CPU 9000 @ 1.00GHz, 37 cores, Python 3.99.1"
