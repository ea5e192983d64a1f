"""The Export page's files (app/exports.py) without training a target: a checkpoint folder made by hand."""

from __future__ import annotations

import io
import json
import zipfile

from app import exports


def fake_checkpoint(project) -> None:
    folder = project.models_dir / exports.CHECKPOINT_DIR
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"n_labels": 4, "class_names": ["red", "green", "blue"]}))
    (folder / "model.safetensors").write_bytes(b"weights")


def test_the_checkpoint_bundle_is_kept_in_the_exports_folder_too(project):
    fake_checkpoint(project)
    data = exports.checkpoint_bundle(project, "p_target_checkpoint.zip")
    assert (project.exports_dir / "p_target_checkpoint.zip").read_bytes() == data  # as the page says
    assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == [
        "target/README.md",
        "target/metadata.json",
        "target/model.safetensors",
    ]
    assert exports.checkpoint_bundle(project, "../outside.zip")  # a name is a name, never a path
    assert (project.exports_dir / "outside.zip").is_file() and not (project.root / "outside.zip").exists()


def test_the_readme_says_the_image_path_is_a_placeholder(project):
    fake_checkpoint(project)
    readme = zipfile.ZipFile(io.BytesIO(exports.checkpoint_bundle(project))).read("target/README.md").decode()
    commands = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert "IMAGE=your_image.jpg  # a placeholder: the path of the image" in commands
    assert commands.rstrip().endswith('predict checkpoint/target "$IMAGE"')
    assert 'Image.open("your_image.jpg")]))  # your image\'s path' in readme
