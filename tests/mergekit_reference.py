"""mergekit as the reference implementation: run it on a recipe YAML and read the tensors it wrote,
for the tests that compare recycler's merges with mergekit's."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file


def read_folder(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files in a checkpoint folder, by name."""
    tensors = {}
    for file in folder.glob("*.safetensors"):
        tensors.update(load_file(file))
    return tensors


def run_mergekit(recipe_file: Path, out: Path) -> dict[str, torch.Tensor]:
    """mergekit's `run_merge` on a mergekit YAML, writing to `out`; the tensors it wrote."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = MergeConfiguration.model_validate(yaml.safe_load(recipe_file.read_text()))
    run_merge(config, str(out), options=MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False))
    return read_folder(out)
