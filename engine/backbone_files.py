"""Where a project's self-supervised backbone lives, and its readout, without torch.

The app server reads the backbone's status from here; importing torch there
would slow every page (engine.initial keeps round 0 torch-free for the same reason).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

NONE, SSL = "none", "ssl"
TORCH_ARCHS = ("resnet18", "resnet34", "resnet50")
FROZEN_PROXIES = ("linear", "mlp")  # proxies that are heads on the backbone's embeddings (engine.frozen)
BACKBONE_TARGET = "backbone"  # the target model that fine-tunes the backbone (engine.target)

SSL_WEIGHTS = "backbone_ssl.safetensors"
SSL_META = "backbone_ssl.json"  # written last: its presence means the backbone is ready
SSL_STATE = "backbone_ssl_state.pt"  # the training state a resumed run starts from


class BackboneError(ValueError):
    """A backbone cannot be used: the message says which file and why, and what to do."""


def read_meta(path: Path) -> dict | None:
    """The JSON metadata at `path`, or None when absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def ssl_meta(models_dir: Path) -> dict | None:
    """The finished SSL backbone's metadata (steps, seconds, knn_accuracy, ...), or None when there is none yet."""
    return read_meta(Path(models_dir) / SSL_META)


def check_backbone_setting(value: str) -> str:
    """`value` if it names a usable backbone (none, ssl, an architecture in the torch cache, a file);
    else BackboneError."""
    value = (value or NONE).strip()
    if value in (NONE, SSL):
        return value
    weights_path(value)
    return value


def names_weights_file(value: str) -> bool:
    """True when a backbone setting names a weights file (not none, ssl or an architecture): the
    setting the app server confines to its allowed folders (app.state.check_backbone)."""
    return (value or NONE).strip() not in (NONE, SSL, *TORCH_ARCHS)


def check_backbone_users(backbone: str, proxy: str, target: str) -> None:
    """BackboneError when the proxy or the target is built on a backbone and the project has none."""
    if (backbone or NONE).strip() != NONE:
        return
    if proxy in FROZEN_PROXIES:
        raise BackboneError(
            f"the {proxy} proxy is a head on a backbone's features; set backbone to ssl or a "
            "weights file, or choose a proxy that trains on pixels (auto)"
        )
    if target == BACKBONE_TARGET:
        raise BackboneError(
            "the target 'backbone' fine-tunes the project's backbone; set backbone to ssl or a "
            "weights file, or choose a target trained from scratch (auto)"
        )


def weights_path(value: str) -> Path:
    """The local weights file a backbone setting names (a path, or an architecture found in the torch cache)."""
    if value in TORCH_ARCHS:
        return find_cached_weights(value)
    path = Path(os.path.expanduser(value))  # Path.expanduser raises for an unknown ~user
    if not path.is_file():
        raise BackboneError(
            f"backbone weights file {path} not found; give the path of a local .pth or "
            f".safetensors file, or one of: none, ssl, {', '.join(TORCH_ARCHS)}"
        )
    return path


def torch_cache_dir() -> Path:
    """Where torch keeps downloaded weights: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/...)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def find_cached_weights(arch: str) -> Path:
    """torchvision's `<arch>-<hash>.pth` in the torch cache; BackboneError when absent (never downloads)."""
    folder = torch_cache_dir()
    found = sorted(folder.glob(f"{arch}-*.pth")) + sorted(folder.glob(f"{arch}.pth"))
    if not found:
        raise BackboneError(
            f"no {arch} weights in the torch cache ({folder}); copy a {arch} .pth file there "
            "or give its path. Weights are never downloaded."
        )
    return found[0]
