"""Encoder half of VITA's TiCodec codec, and the residual blocks it shares with the generator (`codec_vita.py`).

The encoder turns 24 kHz audio into codec features (one `codebook_dim` vector every `hop_length` samples) and a
speaker vector: a Conv1d, then per stage a strided Conv1d (the generator's rates in reverse) and the stage's residual
blocks, each followed by a GroupNorm; the speaker encoder reads the features after the middle stage. `codec_vita.py`
quantises both to the nearest codes. Weights are stored without weight norm (the converter folds it).

Two quirks of the released encoder are kept because its weights were trained with them: a stage's residual blocks are
normalised cumulatively (each GroupNorm sees the running sum of the blocks so far, then the sum is divided by the block
count), and the LeakyReLU before the last convolution has torch's default slope 0.01, not the 0.1 used elsewhere.
"""

import logging

import torch
from torch import nn
from torch.nn import functional as F

from .configuration_vita_codec import VitaCodecConfig

logger = logging.getLogger(__name__)

# The released encoder's last activation is `leaky_relu` without a slope argument, i.e. torch's default.
ENCODER_FINAL_SLOPE = 0.01


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the length of a stride-1 convolution with an odd kernel."""
    return dilation * (kernel_size - 1) // 2


class VitaCodecResBlock1(nn.Module):
    """Residual pairs (LeakyReLU, dilated conv, LeakyReLU, conv), one per dilation; keeps (batch, channels, time)."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], slope: float):
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size)) for _ in dilations
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for dilated_conv, conv in zip(self.convs1, self.convs2):
            residual = dilated_conv(F.leaky_relu(hidden_states, self.slope))
            hidden_states = hidden_states + conv(F.leaky_relu(residual, self.slope))
        return hidden_states


class VitaCodecResBlock2(nn.Module):
    """Residual (LeakyReLU, dilated conv) steps, one per dilation; keeps (batch, channels, time)."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], slope: float):
        super().__init__()
        self.slope = slope
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
            for d in dilations
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            hidden_states = hidden_states + conv(F.leaky_relu(hidden_states, self.slope))
        return hidden_states


def make_resblocks(
    config: VitaCodecConfig, channels: int, kernel_sizes: list[int], dilation_sizes: list[list[int]]
) -> list[nn.Module]:
    """One residual block per (kernel, dilations) pair, of the config's block type."""
    block_class = VitaCodecResBlock1 if config.resblock_type == "1" else VitaCodecResBlock2
    return [
        block_class(channels, kernel, dilations, config.leaky_relu_slope)
        for kernel, dilations in zip(kernel_sizes, dilation_sizes)
    ]


class VitaCodecSpeakerEncoder(nn.Module):
    """Three bias-free convs, a mean over time, a linear layer and a BatchNorm: (batch, C, T) -> (batch, speaker)."""

    def __init__(self, config: VitaCodecConfig):
        super().__init__()
        in_channels, hidden_channels, out_channels, kernel_size, stride = config.global_feature_conv
        padding = (kernel_size - stride) // 2
        widths = [in_channels, hidden_channels, hidden_channels, out_channels]
        self.convs = nn.ModuleList(
            nn.Conv1d(widths[i], widths[i + 1], kernel_size, stride, padding, bias=False) for i in range(3)
        )
        self.linear = nn.Linear(out_channels, out_channels)
        # Inference uses the running statistics: keep the model in eval mode (`from_pretrained` does).
        self.norm = nn.BatchNorm1d(out_channels)
        self.slope = config.leaky_relu_slope

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            hidden_states = F.leaky_relu(conv(hidden_states), self.slope)
        pooled = hidden_states.mean(dim=2)  # (batch, speaker_channels): one vector per clip
        return self.norm(F.leaky_relu(self.linear(pooled), self.slope))


class VitaCodecEncoder(nn.Module):
    """Audio (batch, samples) -> codec features (batch, codebook_dim, samples // hop_length) and a speaker vector."""

    def __init__(self, config: VitaCodecConfig):
        super().__init__()
        self.slope = config.leaky_relu_slope
        channels = [config.encoder_initial_channel, *config.encoder_stage_channels]
        self.conv_pre = nn.Conv1d(1, channels[0], 7, padding=3)
        # The generator's stages in reverse order, each with the residual blocks' settings reversed too.
        stages = list(zip(reversed(config.upsample_rates), reversed(config.upsample_kernel_sizes)))
        self.downsampler = nn.ModuleList(
            nn.Conv1d(channels[i], channels[i + 1], kernel, rate, padding=(kernel - rate) // 2)
            for i, (rate, kernel) in enumerate(stages)
        )
        kernel_sizes = list(reversed(config.resblock_kernel_sizes))
        dilation_sizes = list(reversed(config.resblock_dilation_sizes))
        self.num_kernels = len(kernel_sizes)
        self.resblocks = nn.ModuleList()
        self.norms = nn.ModuleList()
        for stage_channels in channels[1:]:
            self.resblocks.extend(make_resblocks(config, stage_channels, kernel_sizes, dilation_sizes))
            groups = stage_channels // config.encoder_channels_per_group
            self.norms.extend(nn.GroupNorm(groups, stage_channels, eps=1e-6) for _ in kernel_sizes)
        self.speaker_stage = len(stages) // 2 - 1
        self.speaker_encoder = VitaCodecSpeakerEncoder(config)
        self.conv_post = nn.Conv1d(channels[-1], config.codebook_dim, 3, padding=1)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_states = self.conv_pre(audio.unsqueeze(1))  # (batch, encoder_initial_channel, samples)
        speaker = None
        for stage, downsample in enumerate(self.downsampler):
            # (batch, C, T) -> (batch, 2C, T // rate)
            hidden_states = downsample(F.leaky_relu(hidden_states, self.slope))
            summed = None
            for j in range(self.num_kernels):
                index = stage * self.num_kernels + j
                block_output = self.resblocks[index](hidden_states)
                summed = block_output if summed is None else summed + block_output
                summed = self.norms[index](summed)
            hidden_states = summed / self.num_kernels
            if stage == self.speaker_stage:
                speaker = self.speaker_encoder(hidden_states)  # (batch, speaker_channels)
        hidden_states = F.leaky_relu(hidden_states, ENCODER_FINAL_SLOPE)
        return self.conv_post(hidden_states), speaker  # (batch, codebook_dim, tokens), (batch, speaker_channels)


__all__ = ["VitaCodecEncoder", "VitaCodecResBlock1", "VitaCodecResBlock2", "VitaCodecSpeakerEncoder", "make_resblocks"]
