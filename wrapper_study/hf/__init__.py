"""Hugging Face checkpoints in and out of the shared transformer (GPT-2, LLaMA family).

`load_pretrained(directory)` reads a local config.json + *.safetensors checkpoint (no network,
no PyTorch); `check_supported(directory)` fails early with one line (UnsupportedModelError);
`save_pretrained(config, params, directory)` writes the project's own models the same way.
"""

from wrapper_study.hf.export import architecture_of, save_pretrained
from wrapper_study.hf.load import (SUPPORTED, UnsupportedModelError, check_supported,
                                   load_pretrained)

__all__ = ['SUPPORTED', 'UnsupportedModelError', 'architecture_of', 'check_supported',
           'load_pretrained', 'save_pretrained']
