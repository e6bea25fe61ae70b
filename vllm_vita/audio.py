"""VITA's audio encoder ("whale") and CNN adapter as plain torch modules, for the vLLM model.

The same computation and parameter names as `modeling_vita.audio_encoder.VitaAudioEncoder` (so a converted folder's
`model.audio_tower.*` weights load one to one), without transformers' `PreTrainedModel` machinery, which the vLLM
model does not need and whose transformers 5.24 imports are absent from the 5.19 that vLLM 0.32 pins:
Conv2d subsampling (4x in time) -> linear embedding scaled by sqrt(width) -> pre-norm blocks whose attention adds a
position bias (Transformer-XL's u/v biases over a sinusoidal table, without the rel-shift, as the original) -> final
layer norm -> Conv1d (stride 2) + LayerNorm + activation + linear to the LLM width. 12.5 vectors a second.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN

from .config import VitaAudioVllmConfig

logger = logging.getLogger(__name__)


def _halved(length: torch.Tensor | int) -> torch.Tensor | int:
    # A kernel-3, stride-2 convolution without padding: floor((L - 3) / 2) + 1 == (L - 1) // 2.
    return (length - 1) // 2


def audio_token_count(num_frames: int) -> int:
    """LLM tokens for `num_frames` fbank frames (the processor's and the encoder's formula)."""
    encoder_frames = _halved(_halved(num_frames))
    return (encoder_frames - 1) // 2 + 1 if encoder_frames >= 1 else 0


def _sinusoids(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.to(dtype)


class AudioSubsampling(nn.Module):
    def __init__(self, config: VitaAudioVllmConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.conv = nn.Sequential(nn.Conv2d(1, width, 3, 2), nn.ReLU(), nn.Conv2d(width, width, 3, 2), nn.ReLU())
        self.out = nn.Linear(width * _halved(_halved(config.num_mel_bins)), width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.conv(features.unsqueeze(1))  # (batch, width, frames / 4, bins / 4)
        batch, channels, frames, bins = hidden.shape
        return self.out(hidden.transpose(1, 2).reshape(batch, frames, channels * bins))


class AudioEmbedding(nn.Module):
    def __init__(self, config: VitaAudioVllmConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.scale = math.sqrt(config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.relu(self.layer_norm(self.linear(hidden))) * self.scale


class AudioAttention(nn.Module):
    def __init__(self, config: VitaAudioVllmConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = width // self.num_heads
        self.linear_q = nn.Linear(width, width)
        self.linear_k = nn.Linear(width, width)
        self.linear_v = nn.Linear(width, width)
        self.linear_out = nn.Linear(width, width)
        self.linear_pos = nn.Linear(width, width, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(self.num_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(self.num_heads, self.head_dim))

    def _heads(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden.view(hidden.shape[0], hidden.shape[1], self.num_heads, self.head_dim)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        query = self._heads(self.linear_q(hidden))
        key = self._heads(self.linear_k(hidden)).transpose(1, 2)
        value = self._heads(self.linear_v(hidden)).transpose(1, 2)
        position = self._heads(self.linear_pos(positions)).transpose(1, 2)
        scale = self.head_dim**-0.5
        # The position term is an additive bias on the scores, so SDPA runs only the content term.
        bias = torch.matmul((query + self.pos_bias_v).transpose(1, 2), position.transpose(-2, -1)) * scale
        attention = F.scaled_dot_product_attention(
            (query + self.pos_bias_u).transpose(1, 2), key, value, attn_mask=bias + key_bias, scale=scale
        )
        return self.linear_out(attention.transpose(1, 2).reshape(batch, length, width))


class AudioFeedForward(nn.Module):
    def __init__(self, config: VitaAudioVllmConfig) -> None:
        super().__init__()
        self.w_1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.w_2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.act(self.w_1(hidden)))


class AudioLayer(nn.Module):
    def __init__(self, config: VitaAudioVllmConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = AudioAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = AudioFeedForward(config)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.norm1(hidden), positions, key_bias)
        return hidden + self.feed_forward(self.norm2(hidden))


class AudioAdapter(nn.Module):
    def __init__(self, config: VitaAudioVllmConfig) -> None:
        super().__init__()
        self.kernel_size = config.adapter_kernel_size
        self.conv1d = nn.Conv1d(config.hidden_size, 2 * config.hidden_size, self.kernel_size, stride=2)
        self.norm = nn.LayerNorm(2 * config.hidden_size, eps=config.adapter_layer_norm_eps)
        self.act = ACT2FN[config.adapter_hidden_act]
        self.linear = nn.Linear(2 * config.hidden_size, config.output_size)

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        # Padding zeroed and right padding of kernel - 1: a padded clip gives the outputs of the clip alone.
        hidden = F.pad((hidden * frame_mask[..., None]).transpose(1, 2), (0, self.kernel_size - 1))
        return self.linear(self.act(self.norm(self.conv1d(hidden).transpose(1, 2))))


class VitaAudioTower(nn.Module):
    """fbank frames (after CMVN, right padded) -> one `(tokens, LLM width)` tensor per clip."""

    def __init__(self, config: VitaAudioVllmConfig) -> None:
        super().__init__()
        self.config = config
        self.subsampling = AudioSubsampling(config)
        self.embedding = AudioEmbedding(config)
        self.layers = nn.ModuleList([AudioLayer(config) for _ in range(config.num_hidden_layers)])
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.adapter = AudioAdapter(config)

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> list[torch.Tensor]:
        dtype = self.subsampling.out.weight.dtype
        hidden = self.subsampling(features.to(dtype))
        encoder_frames = hidden.shape[1]
        if encoder_frames > self.config.max_source_positions:
            raise ValueError(
                f"Audio of {encoder_frames} encoder frames exceeds the position table of "
                f"{self.config.max_source_positions}; split the audio into shorter clips."
            )
        encoder_lengths = _halved(_halved(frame_lengths))
        valid = torch.arange(encoder_frames, device=hidden.device)[None, :] < encoder_lengths[:, None]
        hidden = self.embedding(hidden)
        positions = _sinusoids(encoder_frames, self.config.hidden_size, hidden.device, hidden.dtype)[None]
        # finfo.min rather than -inf keeps the scores of padded rows finite.
        key_bias = torch.zeros(valid.shape, dtype=hidden.dtype, device=hidden.device)
        key_bias = key_bias.masked_fill(~valid, torch.finfo(hidden.dtype).min)[:, None, None]
        for layer in self.layers:
            hidden = layer(hidden, positions, key_bias)
        adapted = self.adapter(self.layer_norm(hidden), valid.to(hidden.dtype))
        counts = [audio_token_count(int(n)) for n in frame_lengths]
        return [adapted[i, :count] for i, count in enumerate(counts)]


__all__ = ["VitaAudioTower", "audio_token_count"]
