"""Models by name: small pre-activation ResNets (proxies) and ResNet targets.

Every model is built from a frozen `ModelConfig`, so a checkpoint that stores
the config can rebuild it without the training code. Every model has
`forward(x) -> logits [N, C]`, `embed(x) -> [N, D]` (penultimate features after
global pooling), `classify(embedding) -> logits`, `embed_dim` and `.config`.

Inputs are normalized float [N, 3, S, S]. The small-image families keep full
resolution up to 48 px (CIFAR-style 3x3 stem, no max-pool); for larger images
the stem strides by 2 (up to 96 px) or 4, so the first stage sees about
32-48 px and the cost stays near the CIFAR cost. Pretrained weights come only
from a local file (`pretrained_path`), never from the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

PREACT = "preact_resnet"
RESNET_SMALL = "resnet_small"
TORCHVISION = "torchvision_resnet"
FAMILIES = (PREACT, RESNET_SMALL, TORCHVISION)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture settings; enough to rebuild the model (weights aside)."""

    name: str  # registry name, e.g. "proxy_tiny"
    family: str  # one of FAMILIES
    depth: int  # layers: 6n+2 for preact_resnet; 18/34/50 for the ResNets
    width: int  # channels of the first stage (64 for the ResNets)
    num_classes: int
    image_size: int  # side of the square input, pixels


def _preact(name: str, depth: int, width: int) -> Callable[[int, int], ModelConfig]:
    return lambda num_classes, image_size: ModelConfig(name, PREACT, depth, width, num_classes, image_size)


def _resnet(name: str, family: str, depth: int) -> Callable[[int, int], ModelConfig]:
    return lambda num_classes, image_size: ModelConfig(name, family, depth, 64, num_classes, image_size)


# name -> factory(num_classes, image_size) -> ModelConfig. engine.names.MODEL_NAMES lists the same
# names in the same order for the app, without torch (tests/engine/test_names.py checks they agree).
MODELS: dict[str, Callable[[int, int], ModelConfig]] = {
    "proxy_tiny": _preact("proxy_tiny", 8, 16),  # fast CPU default proxy
    "resnet20": _preact("resnet20", 20, 16),  # the SVP paper's proxy
    "resnet56": _preact("resnet56", 56, 16),
    "resnet18": _resnet("resnet18", RESNET_SMALL, 18),  # target for small images
    "tv_resnet18": _resnet("tv_resnet18", TORCHVISION, 18),
    "tv_resnet50": _resnet("tv_resnet50", TORCHVISION, 50),
}


def build_model(
    name: str, num_classes: int, image_size: int, *, seed: int | None = None, pretrained_path: str | Path | None = None
) -> Model:
    """The model registered as `name` for `num_classes` outputs and `image_size` px inputs.

    `seed` makes the initial weights reproducible without touching the global
    RNG; `pretrained_path` loads a local state dict (see `load_pretrained`).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    model = model_from_config(MODELS[name](num_classes, image_size), seed=seed)
    if pretrained_path is not None:
        load_pretrained(model, pretrained_path)
    return model


def model_from_config(config: ModelConfig, *, seed: int | None = None) -> Model:
    """A freshly initialised model for `config` (ValueError for invalid settings)."""
    _check_config(config)
    builder = PreActResNet if config.family == PREACT else ResNet
    if seed is None:
        return builder(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(config)


def _check_config(config: ModelConfig) -> None:
    if config.family not in FAMILIES:
        raise ValueError(f"unknown model family {config.family!r}; expected one of {FAMILIES}")
    if config.num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {config.num_classes}")
    if config.image_size < 8:
        raise ValueError(f"image_size must be >= 8 px, got {config.image_size}")
    if config.family == PREACT and (config.depth < 8 or (config.depth - 2) % 6):
        raise ValueError(f"preact_resnet depth must be 6n+2 with n >= 1, got {config.depth}")
    if config.family == PREACT and config.width < 1:
        raise ValueError(f"width must be >= 1, got {config.width}")
    if config.family != PREACT and config.depth not in _RESNET_LAYERS:
        raise ValueError(f"ResNet depth must be one of {sorted(_RESNET_LAYERS)}, got {config.depth}")
    if config.family != PREACT and config.width != 64:
        raise ValueError(f"ResNet width is fixed at 64, got {config.width}")


def stem_stride(image_size: int) -> int:
    """Stride of the small-image stem: 1 up to 48 px, 2 up to 96 px, else 4."""
    return 1 if image_size <= 48 else 2 if image_size <= 96 else 4


def _stem_conv(cout: int, stride: int) -> nn.Conv2d:
    kernel = 3 if stride <= 2 else 2 * stride - 1  # wide enough to see every pixel
    return nn.Conv2d(3, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings in Deep Residual Networks")."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        needs_projection = stride != 1 or cin != cout
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + skip


class PreActResNet(nn.Module):
    """CIFAR-style pre-activation ResNet: depth 6n+2, three stages of n blocks, widths w, 2w, 4w."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        n, w = (config.depth - 2) // 6, config.width
        self.stem = _stem_conv(w, stem_stride(config.image_size))
        blocks, cin = [], w
        for stage, cout in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                blocks.append(PreActBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, config.num_classes)
        self.embed_dim = cin
        _init_weights(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, 4w] of normalized images [N, 3, S, S]."""
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits [N, C] from `embed`'s output."""
        return self.fc(embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


_RESNET_LAYERS = {
    18: (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
    34: (torchvision.models.resnet.BasicBlock, [3, 4, 6, 3]),
    50: (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3]),
}


class ResNet(torchvision.models.ResNet):
    """torchvision's ResNet (same parameter names, so its state dicts load) with `embed`.

    Family `resnet_small` swaps the 7x7/2 stem and max-pool for a small-image
    stem (3x3, stride from `stem_stride`); `torchvision_resnet` is unchanged.
    """

    def __init__(self, config: ModelConfig):
        block, layers = _RESNET_LAYERS[config.depth]
        super().__init__(block, layers, num_classes=config.num_classes)
        self.config = config
        if config.family == RESNET_SMALL:
            self.conv1 = _stem_conv(64, stem_stride(config.image_size))
            self.maxpool = nn.Identity()
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.embed_dim = self.fc.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, 512 or 2048] of normalized images [N, 3, S, S]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits [N, C] from `embed`'s output."""
        return self.fc(embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


Model = PreActResNet | ResNet  # what engine.models builds: .config, .embed_dim, embed(), classify()


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# Parameters whose shape may legitimately differ from a pretrained file: the
# classifier (other classes) and the stem (small-image stem vs ImageNet 7x7).
_REPLACEABLE = ("fc.", "conv1.", "stem.")


def load_pretrained(model: Model, path: str | Path) -> Model:
    """Load a local state dict (`.safetensors`, or a `torch.save` file) into `model`.

    Tensors of the classifier or stem whose shape differs are skipped (they
    keep their fresh initialisation); any other missing, unexpected or
    mis-shaped tensor raises ValueError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    state = _read_state_dict(path)
    own = model.state_dict()
    keep = {}
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            if not key.startswith(_REPLACEABLE):
                raise ValueError(
                    f"{path}: {key} has shape {tuple(tensor.shape)}, model expects {tuple(own[key].shape)}"
                )
            continue
        keep[key] = tensor
    missing = [k for k in own if k not in keep and not k.startswith(_REPLACEABLE)]
    unexpected = [k for k in keep if k not in own]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit {model.config.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(keep, strict=False)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say which
        raise ValueError(f"cannot read pretrained weights from {path}: {exc}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}
