"""The machine a figure was measured on: every benchmark records it beside its numbers."""

from __future__ import annotations

import os
import platform
import sys


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict:
    """CPU, cores, load, Python, and (when torch is already imported: the UI benchmarks do not import
    it) torch's version, threads and GPU."""
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info.update(
            torch=torch.__version__,
            torch_threads=torch.get_num_threads(),
            gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        )
    return info


def machine_description() -> str:
    """One line: "machine: CPU, N cores, torch V (T threads), GPU ..." (Python instead without torch)."""
    info = machine_info()
    text = f"machine: {info['cpu']}, {info['cores']} cores"
    if "torch" not in info:
        return f"{text}, Python {info['python']}"
    gpu = f", GPU {info['gpu']}" if info["gpu"] else ", no GPU"
    return f"{text}, torch {info['torch']} ({info['torch_threads']} threads){gpu}"
