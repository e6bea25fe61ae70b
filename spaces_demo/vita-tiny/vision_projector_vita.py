"""VITA's vision projector: the pixel shuffle that merges 2x2 patches into one token, and the two-layer MLP that
maps the merged vision features to the LLM width (VITA's `mlp2x_gelu`, as InternVL's projector without its layer
norm). `VitaModel.get_image_features` runs the vision tower, drops CLS, scales, then these two.
"""

import logging

import torch
from torch import nn
from transformers.activations import ACT2FN

from .configuration_vita import VitaConfig

logger = logging.getLogger(__name__)


def pixel_shuffle(features: torch.Tensor, ratio: float) -> torch.Tensor:
    """Merge each k x k block of patches (k = 1/ratio) into one token: (N, H, W, C) -> (N, H*W/k^2, C*k^2).

    Channel order inside a token is (row offset, column offset, channel), exactly as InternVL and VITA do it.
    """
    block = round(1 / ratio)
    num_images, height, width, channels = features.shape
    if height % block or width % block:
        raise ValueError(f"Patch grid {height}x{width} is not divisible by the pixel-shuffle block {block}.")
    features = features.view(num_images, height // block, block, width // block, block, channels)
    features = features.permute(0, 1, 3, 2, 4, 5)  # (N, H/k, W/k, k, k, C)
    return features.reshape(num_images, (height // block) * (width // block), block * block * channels)


class VitaMultiModalProjector(nn.Module):
    """Two-layer MLP from pixel-shuffled vision features to the LLM width (VITA's `mlp2x_gelu`, no layer norm)."""

    def __init__(self, config: VitaConfig):
        super().__init__()
        in_features = config.vision_config.hidden_size * round(1 / config.downsample_ratio) ** 2
        self.linear_1 = nn.Linear(in_features, config.text_config.hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(config.text_config.hidden_size, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


__all__ = ["VitaMultiModalProjector", "pixel_shuffle"]
