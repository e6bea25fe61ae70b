"""VITA's TiCodec codec as a transformers model: codec tokens and speaker tokens <-> 24 kHz audio.

`VitaCodecModel.decode` is the vocoder of VITA-1.5's speech output: each codec token is looked up in one codebook,
the eight global (speaker) tokens in eight small codebooks whose lookups are concatenated, and a HiFi-GAN style
generator turns the token embeddings into `hop_length` (600) samples per token, adding the speaker embedding to every
frame after the stage with `config.speaker_channels` channels. `encode` runs the codec's encoder
(`codec_encoder_vita.py`) and picks the nearest code of each codebook, giving codec tokens and the speaker's global
tokens for a reference recording.

Weights are stored without weight norm: `convert_vita_codec.py` folds the released `weight_g` / `weight_v` pairs.
The generator's receptive field spans a few tokens only, so decoding a long sequence in overlapping windows (10 tokens
of context each side, as VITA's streaming does) and joining the kept middles gives the one-shot audio.
"""

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .codec_encoder_vita import VitaCodecEncoder, make_resblocks
from .configuration_vita_codec import VitaCodecConfig

logger = logging.getLogger(__name__)


@dataclass
class VitaCodecOutput(ModelOutput):
    r"""
    audio (`torch.FloatTensor` of shape `(batch_size, num_tokens * hop_length)`):
        Mono waveform in [-1, 1] at `config.sampling_rate`, `hop_length` samples per codec token.
    """

    audio: torch.FloatTensor | None = None


class VitaCodecQuantizer(nn.Module):
    """The codebooks: token ids -> embeddings (decoding) and vectors -> nearest token ids (encoding)."""

    def __init__(self, config: VitaCodecConfig):
        super().__init__()
        self.codebook = nn.Embedding(config.codebook_size, config.codebook_dim)
        self.global_codebooks = nn.ModuleList(
            nn.Embedding(config.global_codebook_size, config.global_code_dim) for _ in range(config.global_code_num)
        )

    def embed(self, codec_tokens: torch.LongTensor) -> torch.Tensor:
        return self.codebook(codec_tokens).transpose(1, 2)  # (batch, tokens) -> (batch, codebook_dim, tokens)

    def embed_global(self, global_tokens: torch.LongTensor) -> torch.Tensor:
        # (batch, global_code_num) -> (batch, global_code_num * global_code_dim), codebook i embedding token i
        lookups = [codebook(global_tokens[:, i]) for i, codebook in enumerate(self.global_codebooks)]
        return torch.cat(lookups, dim=-1)

    @staticmethod
    def nearest(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.LongTensor:
        """Index of the closest code (squared Euclidean distance) for each row of `vectors` (n, dim) -> (n,)."""
        # The expanded form |x|^2 + |e|^2 - 2 x.e is what the codec was trained with; the same arithmetic keeps
        # near-ties resolved the same way as in the original.
        distances = (
            vectors.pow(2).sum(dim=1, keepdim=True)
            + codebook.pow(2).sum(dim=1)
            - 2 * torch.matmul(vectors, codebook.T)
        )
        return distances.argmin(dim=1)

    def quantize(self, features: torch.Tensor) -> torch.LongTensor:
        batch_size, dim, num_tokens = features.shape  # (batch, codebook_dim, tokens)
        flat = features.transpose(1, 2).reshape(-1, dim)
        return self.nearest(flat, self.codebook.weight).reshape(batch_size, num_tokens)

    def quantize_global(self, speaker: torch.Tensor) -> torch.LongTensor:
        # (batch, global_code_num * global_code_dim) -> (batch, global_code_num): one slice per codebook
        slices = speaker.split(self.global_codebooks[0].embedding_dim, dim=-1)
        tokens = [self.nearest(part, codebook.weight) for part, codebook in zip(slices, self.global_codebooks)]
        return torch.stack(tokens, dim=-1)


class VitaCodecGenerator(nn.Module):
    """Token embeddings (batch, codebook_dim, tokens) + speaker (batch, speaker_channels) -> (batch, tokens * hop)."""

    def __init__(self, config: VitaCodecConfig):
        super().__init__()
        self.slope = config.leaky_relu_slope
        # The config guarantees exactly one stage outputs `speaker_channels` (channels halve at every stage).
        self.speaker_stage = config.generator_stage_channels.index(config.speaker_channels)
        channels = [config.upsample_initial_channel, *config.generator_stage_channels]
        self.conv_pre = nn.Conv1d(config.codebook_dim, channels[0], 7, padding=3)
        # Padding (k - u) // 2 with an even k - u (validated by the config) makes each stage exactly u times longer.
        self.upsampler = nn.ModuleList(
            nn.ConvTranspose1d(channels[i], channels[i + 1], kernel, rate, padding=(kernel - rate) // 2)
            for i, (rate, kernel) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes))
        )
        self.num_kernels = len(config.resblock_kernel_sizes)
        self.resblocks = nn.ModuleList()
        for stage_channels in channels[1:]:
            self.resblocks.extend(
                make_resblocks(config, stage_channels, config.resblock_kernel_sizes, config.resblock_dilation_sizes)
            )
        self.conv_post = nn.Conv1d(channels[-1], 1, 7, padding=3)

    def forward(self, embeddings: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv_pre(embeddings)  # (batch, upsample_initial_channel, tokens)
        for stage, upsample in enumerate(self.upsampler):
            # (batch, C, T) -> (batch, C / 2, T * rate)
            hidden_states = upsample(F.leaky_relu(hidden_states, self.slope))
            blocks = self.resblocks[stage * self.num_kernels : (stage + 1) * self.num_kernels]
            hidden_states = sum(block(hidden_states) for block in blocks) / self.num_kernels
            if stage == self.speaker_stage:
                # The speaker embedding conditions every frame from this stage on.
                hidden_states = hidden_states + speaker[:, :, None]
        hidden_states = self.conv_post(F.leaky_relu(hidden_states, self.slope))  # (batch, 1, tokens * hop)
        return torch.tanh(hidden_states).squeeze(1)


class VitaCodecPreTrainedModel(PreTrainedModel):
    config: VitaCodecConfig
    base_model_prefix = "codec"
    main_input_name = "codec_tokens"
    input_modalities = ("audio",)
    # No attention anywhere: any attention request is fine (a speech checkpoint can switch its LLM's attention).
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, nn.Embedding):
            # Codebooks start uniform in +-1/size, as the codec was trained.
            bound = 1.0 / module.num_embeddings
            init.uniform_(module.weight, -bound, bound)


class VitaCodecModel(VitaCodecPreTrainedModel):
    """TiCodec: `decode` (tokens -> audio), `encode` (audio -> tokens and speaker tokens); `forward` decodes."""

    def __init__(self, config: VitaCodecConfig):
        super().__init__(config)
        self.quantizer = VitaCodecQuantizer(config)
        self.generator = VitaCodecGenerator(config)
        self.encoder = VitaCodecEncoder(config)
        self.post_init()

    def _checked_tokens(self, name: str, tokens, width: int | None, vocab_size: int, how: str) -> torch.LongTensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            found = tokens.dtype if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"`{name}` must be an integer tensor, got {found}; pass token ids as a LongTensor.")
        if tokens.dim() != 2 or tokens.shape[1] == 0 or (width is not None and tokens.shape[1] != width):
            raise ValueError(f"`{name}` must have shape {how}, got {tuple(tokens.shape)}.")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
            raise ValueError(
                f"`{name}` holds ids in [{int(tokens.min())}, {int(tokens.max())}], outside [0, {vocab_size}); "
                "drop special tokens (such as the decoder's end-of-speech id) before decoding."
            )
        return tokens.long()

    def decode(self, codec_tokens: torch.LongTensor, global_tokens: torch.LongTensor | None = None) -> torch.Tensor:
        """Codec tokens (batch, K) and global tokens (batch or 1, global_code_num) -> audio (batch, K * hop_length).

        Without `global_tokens`, every item uses `config.global_tokens` (VITA-1.5's default speaker).
        """
        codec_tokens = self._checked_tokens(
            "codec_tokens",
            codec_tokens,
            None,
            self.config.codebook_size,
            "(batch_size, num_tokens) with num_tokens > 0",
        )
        batch_size = codec_tokens.shape[0]
        if global_tokens is None:
            global_tokens = torch.tensor([self.config.global_tokens], device=codec_tokens.device)
        num_global = self.config.global_code_num
        global_tokens = self._checked_tokens(
            "global_tokens", global_tokens, num_global, self.config.global_codebook_size, f"(batch_size, {num_global})"
        )
        if global_tokens.shape[0] not in (1, batch_size):
            raise ValueError(
                f"`global_tokens` has {global_tokens.shape[0]} rows for {batch_size} sequences of codec tokens; give "
                "one row per sequence, or one row for all."
            )
        embeddings = self.quantizer.embed(codec_tokens.to(self.device))  # (batch, codebook_dim, K)
        speaker = self.quantizer.embed_global(global_tokens.to(self.device))  # (1 or batch, speaker_channels)
        return self.generator(embeddings, speaker.expand(batch_size, -1))  # (batch, K * hop_length)

    def encode(self, audio: torch.FloatTensor) -> tuple[torch.LongTensor, torch.LongTensor]:
        """Audio (batch, N) at `config.sampling_rate` in [-1, 1] -> codec tokens (batch, N // hop_length) and global
        tokens (batch, global_code_num). Call it in eval mode: the speaker encoder's BatchNorm uses running stats.
        """
        if not isinstance(audio, torch.Tensor) or not audio.dtype.is_floating_point:
            found = audio.dtype if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise ValueError(f"`audio` must be a float tensor of samples in [-1, 1], got {found}.")
        hop_length = self.config.hop_length
        if audio.dim() != 2 or audio.shape[1] < hop_length:
            raise ValueError(
                f"`audio` must have shape (batch_size, num_samples) with num_samples >= hop_length ({hop_length}), "
                f"got {tuple(audio.shape)}; add a batch dimension with `audio[None]` for a single clip."
            )
        if not torch.isfinite(audio).all():
            raise ValueError("`audio` contains NaN or infinite samples; clean or drop the clip before encoding.")
        features, speaker = self.encoder(audio.to(self.device, self.dtype))
        # (batch, codebook_dim, N // hop) -> (batch, N // hop); (batch, speaker_channels) -> (batch, global_code_num)
        return self.quantizer.quantize(features), self.quantizer.quantize_global(speaker)

    def forward(
        self,
        codec_tokens: torch.LongTensor,
        global_tokens: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> VitaCodecOutput | tuple:
        r"""
        codec_tokens (`torch.LongTensor` of shape `(batch_size, num_tokens)`):
            Codec token ids in `[0, config.codebook_size)`.
        global_tokens (`torch.LongTensor` of shape `(batch_size, global_code_num)`, *optional*):
            Speaker tokens; one row may serve the whole batch. Defaults to `config.global_tokens`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        audio = self.decode(codec_tokens, global_tokens)
        return VitaCodecOutput(audio=audio) if return_dict else (audio,)


__all__ = ["VitaCodecModel", "VitaCodecOutput", "VitaCodecPreTrainedModel"]
