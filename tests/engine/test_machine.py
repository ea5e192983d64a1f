"""engine.machine: the one description of the machine every benchmark records."""

from __future__ import annotations

import os

import torch

from engine.machine import cpu_model, machine_description, machine_info


def test_the_description_names_the_cpu_the_cores_torch_and_the_gpu():
    info = machine_info()
    assert info["cpu"] == cpu_model() and info["cores"] == os.cpu_count()
    assert info["torch"] == torch.__version__ and info["torch_threads"] == torch.get_num_threads()
    text = machine_description()
    assert text.startswith(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}")
    assert text.endswith(", no GPU" if not torch.cuda.is_available() else torch.cuda.get_device_name(0))
