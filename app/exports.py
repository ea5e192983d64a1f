"""Bytes for the Export page's download buttons, written by `storage.export_*` into the project's exports folder."""

from __future__ import annotations

import io
import json
import shlex
import sys
import zipfile
from pathlib import Path

import storage

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = "target"  # engine.target saves the target under models_dir / "target"
BUNDLE_README = """\
# Target model checkpoint

Trained by Proxy Labeler on {n_labels} labels; classes in output order:
{classes}

Files in `target/`: `model.safetensors` (weights), `metadata.json` (model
config, class names, image size, normalization, metrics), `metrics.json`
(validation metrics).

## Load it

Unzip, then classify images with the Proxy Labeler installation that
exported it ({repo}); each line printed is path, class, probability:

```bash
{python} -m zipfile -e {bundle} checkpoint
IMAGE=your_image.jpg  # a placeholder: the path of the image (or images) to classify
PYTHONPATH={repo} {python} -m engine predict checkpoint/target "$IMAGE"
```

In Python, with `{repo}` on the path:

```python
from PIL import Image
from engine.checkpoint import load_checkpoint

model = load_checkpoint("checkpoint/target")          # CPU; device="cuda" for a GPU
print(model.predict([Image.open("your_image.jpg")]))  # your image's path; [(class name, probability)]
```

Without the repository, rebuild the architecture from `metadata.json["model"]`
and load the state dict with `safetensors.torch.load_file("model.safetensors")`.
Inputs are RGB, resized so the shorter side is `image_size` and center-cropped
square, scaled to 0..1 and normalized with `metadata.json["normalization"]`
(mean, std per channel).
"""


def labels_csv(project: storage.Project) -> bytes:
    return storage.export_labels_csv(project, project.exports_dir / "labels.csv").read_bytes()


def labels_jsonl(project: storage.Project) -> bytes:
    return storage.export_labels_jsonl(project, project.exports_dir / "labels.jsonl").read_bytes()


def imagefolder_zip(project: storage.Project) -> bytes:
    return storage.export_imagefolder_zip(project, project.exports_dir / "imagefolder.zip").read_bytes()


def subset_csv(project: storage.Project, run_id: int) -> bytes:
    dest = project.exports_dir / f"labels_coreset_{run_id}.csv"
    return storage.export_labels_csv(project, dest, coreset_run=run_id).read_bytes()


def subset_jsonl(project: storage.Project, run_id: int) -> bytes:
    dest = project.exports_dir / f"labels_coreset_{run_id}.jsonl"
    return storage.export_labels_jsonl(project, dest, coreset_run=run_id).read_bytes()


def subset_zip(project: storage.Project, run_id: int) -> bytes:
    dest = project.exports_dir / f"imagefolder_coreset_{run_id}.zip"
    return storage.export_imagefolder_zip(project, dest, coreset_run=run_id).read_bytes()


def checkpoint_dir(project: storage.Project) -> Path | None:
    """The target checkpoint folder, if the target was trained and its metadata written."""
    folder = project.models_dir / CHECKPOINT_DIR
    return folder if (folder / "metadata.json").is_file() else None


def checkpoint_bundle(project: storage.Project, bundle_name: str = "target_checkpoint.zip") -> bytes:
    """A zip of the target checkpoint (weights, metadata.json, metrics) plus a README whose commands,
    run where the zip was saved as `bundle_name`, unzip it and classify an image; also kept in the project's
    exports folder under that name, as every export is."""
    folder = checkpoint_dir(project)
    if folder is None:
        raise storage.StorageError("no target checkpoint yet; train the target on the Target page first")
    metadata = json.loads((folder / "metadata.json").read_text())
    readme = BUNDLE_README.format(
        n_labels=metadata.get("n_labels", "?"),
        classes="\n".join(f"{i}. {name}" for i, name in enumerate(metadata.get("class_names", []))),
        repo=shlex.quote(str(REPO_ROOT)),
        python=shlex.quote(sys.executable),
        bundle=shlex.quote(bundle_name),
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                archive.write(path, f"target/{path.name}")
        archive.writestr("target/README.md", readme)
    with storage.atomic_write(project.exports_dir / Path(bundle_name).name) as tmp:
        tmp.write_bytes(out.getvalue())
    return out.getvalue()
