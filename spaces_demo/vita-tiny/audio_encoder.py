"""VITA's audio encoder ("whale"): fbank frames -> LLM-width embeddings, 12.5 vectors a second.

Structure follows the released encoder so converted weights load one to one: a Conv2d subsampling (4x in time), a
linear embedding, 24 pre-norm transformer blocks whose attention adds Transformer-XL style biases (`pos_bias_u`,
`pos_bias_v`, `linear_pos`; like the original, without the "rel_shift", so the position term biases each key by its
absolute position), a final layer norm, then the CNN adapter (Conv1d stride 2, layer norm, GELU, linear) to the LLM
width. Global CMVN lives in the feature extractor.

Two deliberate departures from the original, both about inference correctness:
- attention is always full attention with a key-padding mask (the original could draw random chunk masks at
  inference, depending on an external yaml);
- every output carries a mask, so padded frames never reach the LLM.
The module layout borrows from transformers' audio towers (`Qwen2AudioEncoder`): a `PreTrainedModel` with
`GradientCheckpointingLayer` blocks and eager/SDPA attention. Its output follows transformers' multimodal towers:
`last_hidden_state` is the transformer's (the tower width), `pooler_output` the adapter's (the LLM width).
"""

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_vita import VitaAudioEncoderConfig

logger = logging.getLogger(__name__)


def _subsampled_length(length):
    # Conv with kernel 3, stride 2 and no padding: floor((L - 3) / 2) + 1 == (L - 1) // 2.
    return (length - 1) // 2


def get_audio_token_count(num_frames: int) -> int:
    """Number of LLM tokens for `num_frames` fbank frames: ((T-1)//2 - 1)//2 encoder frames d, then (d-1)//2 + 1.

    `processing_vita.feature_extraction_vita.get_audio_token_count` is the same formula (tested to agree); the
    processor uses it to expand `<audio>` placeholders, the encoder to build its output mask.
    """
    encoder_frames = _subsampled_length(_subsampled_length(num_frames))
    if encoder_frames < 1:
        return 0
    return (encoder_frames - 1) // 2 + 1


def get_audio_token_counts(num_frames: torch.Tensor) -> torch.Tensor:
    """Tensor version of `get_audio_token_count`, for a batch of lengths."""
    encoder_frames = _subsampled_length(_subsampled_length(num_frames))
    return torch.where(encoder_frames >= 1, torch.div(encoder_frames - 1, 2, rounding_mode="floor") + 1, 0)


def _length_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def _sinusoid_table(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Computed per call rather than stored: it is cheap and never needs loading, saving or meta-device care.
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    inverse_frequency = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * inverse_frequency)
    table[:, 1::2] = torch.cos(position * inverse_frequency)
    return table.to(dtype)


@dataclass
class VitaAudioEncoderOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, encoder_frames, hidden_size)`):
        Output of the transformer after its final layer norm, 25 frames a second; frames past a clip's length come
        from padding.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, num_tokens, output_size)`):
        The adapter's output at the LLM width, 12.5 vectors a second; positions where `attention_mask` is 0 come from
        padding.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*): embedding output and the output of each block.
    attentions (`tuple(torch.FloatTensor)`, *optional*): attention probabilities of each block.
    attention_mask (`torch.LongTensor` of shape `(batch_size, num_tokens)`):
        1 on the `pooler_output` vectors that belong to real audio, 0 on those from padding.
    """

    attention_mask: torch.LongTensor | None = None


class VitaAudioSubsampling(nn.Module):
    """Two 3x3 stride-2 convolutions over (time, mel), then a linear map of the flattened channels x bins."""

    def __init__(self, config: VitaAudioEncoderConfig):
        super().__init__()
        width = config.hidden_size
        self.conv = nn.Sequential(nn.Conv2d(1, width, 3, 2), nn.ReLU(), nn.Conv2d(width, width, 3, 2), nn.ReLU())
        subsampled_bins = _subsampled_length(_subsampled_length(config.num_mel_bins))
        self.out = nn.Linear(width * subsampled_bins, width)

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv(input_features.unsqueeze(1))  # (batch, width, frames/4, bins/4)
        batch_size, channels, frames, bins = hidden_states.shape
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, frames, channels * bins)
        return self.out(hidden_states)  # (batch, frames/4, width)


class VitaAudioEmbedding(nn.Module):
    """Linear + LayerNorm + ReLU after the subsampling, then the sqrt(width) scaling of the positional encoding."""

    def __init__(self, config: VitaAudioEncoderConfig):
        super().__init__()
        self.linear = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.scale = math.sqrt(config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.relu(self.dropout(self.layer_norm(self.linear(hidden_states))))
        return self.dropout(hidden_states * self.scale)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if position_bias is not None:
        scores = scores + position_bias
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.dropout(scores.softmax(dim=-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class VitaAudioAttention(nn.Module):
    """Multi-head self-attention with content (u) and position (v) biases over a sinusoidal position projection."""

    def __init__(self, config: VitaAudioEncoderConfig):
        super().__init__()
        self.config = config
        self.is_causal = False
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        width = config.hidden_size
        self.linear_q = nn.Linear(width, width)
        self.linear_k = nn.Linear(width, width)
        self.linear_v = nn.Linear(width, width)
        self.linear_out = nn.Linear(width, width)
        self.linear_pos = nn.Linear(width, width, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(self.num_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(self.num_heads, self.head_dim))

    def _split_heads(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, length, _ = hidden_states.shape
        return hidden_states.view(batch_size, length, self.num_heads, self.head_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        attention_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, length, width = hidden_states.shape
        query = self._split_heads(self.linear_q(hidden_states))  # (batch, length, heads, head_dim)
        key = self._split_heads(self.linear_k(hidden_states)).transpose(1, 2)  # (batch, heads, length, head_dim)
        value = self._split_heads(self.linear_v(hidden_states)).transpose(1, 2)
        position = self._split_heads(self.linear_pos(position_embeddings)).transpose(1, 2)  # (1, heads, length, hd)
        query_content = (query + self.pos_bias_u).transpose(1, 2)
        # The position term enters as an additive bias, so fused kernels only run the content term.
        position_bias = torch.matmul((query + self.pos_bias_v).transpose(1, 2), position.transpose(-2, -1))
        position_bias = position_bias * self.scaling

        implementation = self.config._attn_implementation
        if output_attentions or implementation in (None, "eager"):
            attention_function = eager_attention_forward
        else:
            # Flash and flex kernels take no additive bias; SDPA does, so it serves every non-eager setting.
            attention_function = ALL_ATTENTION_FUNCTIONS.get_interface("sdpa", eager_attention_forward)
        attention, weights = attention_function(
            self,
            query_content,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.config.attention_dropout if self.training else 0.0,
            position_bias=position_bias,
            is_causal=False,
        )
        attention = attention.reshape(batch_size, length, width)
        return self.linear_out(attention), weights


class VitaAudioFeedForward(nn.Module):
    def __init__(self, config: VitaAudioEncoderConfig):
        super().__init__()
        self.w_1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.dropout)
        self.w_2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(self.act(self.w_1(hidden_states))))


class VitaAudioEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + attn(norm1(x)), then x + ffn(norm2(x))."""

    def __init__(self, config: VitaAudioEncoderConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = VitaAudioAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = VitaAudioFeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        attention_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention, weights = self.self_attn(
            self.norm1(hidden_states), position_embeddings, attention_mask, output_attentions
        )
        hidden_states = hidden_states + self.dropout(attention)
        hidden_states = hidden_states + self.dropout(self.feed_forward(self.norm2(hidden_states)))
        return hidden_states, weights


class VitaAudioAdapter(nn.Module):
    """Strided Conv1d (kernel 5, right padded) + LayerNorm + GELU + Linear: halves the frame rate, maps to the LLM."""

    def __init__(self, config: VitaAudioEncoderConfig):
        super().__init__()
        self.kernel_size = config.adapter_kernel_size
        self.conv1d = nn.Conv1d(config.hidden_size, 2 * config.hidden_size, self.kernel_size, stride=2)
        self.norm = nn.LayerNorm(2 * config.hidden_size, eps=config.adapter_layer_norm_eps)
        self.act = ACT2FN[config.adapter_hidden_act]
        self.linear = nn.Linear(2 * config.hidden_size, config.output_size)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Zeroed padding makes a padded clip's outputs equal those of the same clip alone.
        hidden_states = (hidden_states * mask[..., None]).transpose(1, 2)  # (batch, width, frames)
        hidden_states = F.pad(hidden_states, (0, self.kernel_size - 1))
        hidden_states = self.conv1d(hidden_states).transpose(1, 2)  # (batch, ceil(frames / 2), 2 * width)
        return self.linear(self.act(self.norm(hidden_states)))


class VitaAudioEncoder(PreTrainedModel):
    """VITA's audio encoder with its adapter: `input_features` (fbank after CMVN) in, LLM-width vectors out."""

    config: VitaAudioEncoderConfig
    base_model_prefix = "audio_tower"
    main_input_name = "input_features"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["VitaAudioEncoderLayer"]
    _supports_sdpa = True

    def __init__(self, config: VitaAudioEncoderConfig):
        super().__init__(config)
        self.subsampling = VitaAudioSubsampling(config)
        self.embedding = VitaAudioEmbedding(config)
        self.layers = nn.ModuleList([VitaAudioEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.adapter = VitaAudioAdapter(config)
        self.gradient_checkpointing = False
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VitaAudioAttention):
            init.xavier_uniform_(module.pos_bias_u)
            init.xavier_uniform_(module.pos_bias_v)

    def get_input_embeddings(self) -> nn.Module:
        return self.subsampling

    def forward(
        self,
        input_features: torch.FloatTensor,
        input_features_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> VitaAudioEncoderOutput | tuple:
        r"""
        input_features (`torch.FloatTensor` of shape `(batch_size, num_frames, num_mel_bins)`):
            80-bin Kaldi fbank frames after global CMVN, right padded (see `VitaFeatureExtractor`).
        input_features_mask (`torch.Tensor` of shape `(batch_size, num_frames)`, *optional*):
            1 on real frames, 0 on padding. All frames are real when omitted.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        if input_features.ndim != 3 or input_features.shape[-1] != self.config.num_mel_bins:
            raise ValueError(
                f"`input_features` must have shape (batch, frames, {self.config.num_mel_bins}), got "
                f"{tuple(input_features.shape)}; compute them with VitaFeatureExtractor."
            )
        batch_size, num_frames, _ = input_features.shape
        if input_features_mask is None:
            frame_lengths = torch.full((batch_size,), num_frames, device=input_features.device)
        else:
            frame_lengths = input_features_mask.to(torch.long).sum(-1)
        if int(frame_lengths.min()) < 7:
            raise ValueError(
                f"Audio clips need at least 7 fbank frames (about 0.085 s) to give one token; the shortest has "
                f"{int(frame_lengths.min())}."
            )

        hidden_states = self.subsampling(input_features.to(self.dtype))
        encoder_lengths = _subsampled_length(_subsampled_length(frame_lengths))
        encoder_frames = hidden_states.shape[1]
        if encoder_frames > self.config.max_source_positions:
            raise ValueError(
                f"Audio of {encoder_frames} encoder frames exceeds the positional table of "
                f"{self.config.max_source_positions} (about {self.config.max_source_positions * 0.04:.0f} s); "
                "split the audio into shorter clips."
            )
        encoder_mask = _length_to_mask(encoder_lengths, encoder_frames)
        hidden_states = self.embedding(hidden_states)
        position_embeddings = _sinusoid_table(
            encoder_frames, self.config.hidden_size, hidden_states.device, hidden_states.dtype
        )[None]
        # Key-padding mask as an additive bias; finfo.min rather than -inf keeps fully padded rows finite.
        attention_mask = torch.zeros(encoder_mask.shape, dtype=hidden_states.dtype, device=hidden_states.device)
        attention_mask = attention_mask.masked_fill(~encoder_mask, torch.finfo(hidden_states.dtype).min)[:, None, None]

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, position_embeddings, attention_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        hidden_states = self.layer_norm(hidden_states)

        adapted = self.adapter(hidden_states, encoder_mask.to(hidden_states.dtype))
        output_mask = _length_to_mask(get_audio_token_counts(frame_lengths), adapted.shape[1])
        output = VitaAudioEncoderOutput(
            last_hidden_state=hidden_states,
            pooler_output=adapted,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            attention_mask=output_mask.long(),
        )
        return output if return_dict else output.to_tuple()


__all__ = ["VitaAudioEncoder", "VitaAudioEncoderOutput", "get_audio_token_count", "get_audio_token_counts"]
