"""Configuration of VITA's speech codec (TiCodec): codec tokens and speaker tokens <-> 24 kHz audio.

Written in the transformers 5.x dataclass style, like `configuration_vita.py`. The defaults reproduce the shapes of
the codec released with VITA-1.5 (`vita_tts_ckpt/codec/model.json`): one codebook of 1024 codes of width 512, a
HiFi-GAN style generator that upsamples by 8 * 5 * 5 * 3 = 600 samples a token (40 tokens a second), and eight
"global" speaker tokens from codebooks of 16-wide codes, whose concatenation (128 wide) is added to the generator's
frames after the stage that outputs 128 channels.
"""

import logging
import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

logger = logging.getLogger(__name__)

# The speaker that every VITA-1.5 demo uses: fixed token ids in the released `codec/model.json`.
DEFAULT_GLOBAL_TOKENS = (473, 975, 419, 219, 565, 121, 550, 616)


def _as_int_list(name: str, value, expected_length: int | None = None) -> list[int]:
    """`value` as a list of ints (JSON gives lists, defaults are tuples); a clear error for anything else."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, int) for item in value):
        raise ValueError(f"`{name}` must be a list of integers, got {value!r}.")
    if expected_length is not None and len(value) != expected_length:
        raise ValueError(f"`{name}` must hold {expected_length} integers, got {len(value)}: {list(value)}.")
    return list(value)


@strict
class VitaCodecConfig(PreTrainedConfig):
    r"""
    Configuration of [`VitaCodecModel`], the TiCodec vocoder of VITA-1.5 and its encoder.

    Decoding looks each codec token up in one codebook, runs the generator (a `conv_pre`, then per stage a transposed
    convolution and the mean of the stage's residual blocks, then `conv_post` and tanh) and adds the speaker embedding
    (the concatenated lookups of the global tokens) to every frame after the stage with `speaker_channels` channels.
    Encoding mirrors the generator with strided convolutions, reads a speaker vector at its middle stage and picks the
    nearest code of every codebook.

    Args:
        sampling_rate (`int`, defaults to 24000): sampling rate of the audio in and out, in Hz.
        codebook_size (`int`, defaults to 1024): number of codec tokens.
        codebook_dim (`int`, defaults to 512): width of a codec token's embedding (the generator's input channels).
        upsample_rates (`list[int]`, defaults to `[8, 5, 5, 3]`): stride of each generator stage; their product is
            `hop_length`, the audio samples of one token. The encoder downsamples by the same rates in reverse.
        upsample_kernel_sizes (`list[int]`, defaults to `[16, 11, 11, 5]`): kernel of each stage's (transposed)
            convolution; `kernel - rate` must be even and non-negative so that a stage maps T frames to exactly
            T * rate.
        upsample_initial_channel (`int`, defaults to 512): channels after the generator's `conv_pre`; each stage
            halves them.
        resblock_kernel_sizes (`list[int]`, defaults to `[3, 7, 11]`): kernel of each residual block of a stage.
        resblock_dilation_sizes (`list[list[int]]`, defaults to `[[1, 3, 5]] * 3`): dilations of each residual block;
            three per block for `resblock_type` "1", two for "2".
        resblock_type (`str`, defaults to `"1"`): "1" for blocks of (dilated conv, conv) residual pairs, "2" for
            blocks of single dilated convs (HiFi-GAN's two variants).
        leaky_relu_slope (`float`, defaults to 0.1): negative slope of the LeakyReLUs.
        global_code_num (`int`, defaults to 8): number of global (speaker) tokens.
        global_codebook_size (`int`, defaults to 1024): size of each global-token codebook.
        global_code_dim (`int`, defaults to 16): width of a global token's embedding; the speaker embedding is
            `global_code_num * global_code_dim` wide.
        global_tokens (`list[int]`, defaults to `[473, 975, 419, 219, 565, 121, 550, 616]`): the speaker used when
            `decode` gets no global tokens (the one all VITA-1.5 demos use).
        speaker_channels (`int`, defaults to 128): the generator adds the speaker embedding after the stage whose
            output has this many channels. It must equal the speaker embedding's width and be the output channel
            count of one stage. (The original decides by comparing channel counts at run time.)
        encoder_initial_channel (`int`, defaults to 32): channels after the encoder's first convolution; each encoder
            stage doubles them.
        encoder_channels_per_group (`int`, defaults to 16): the encoder's GroupNorms use `channels // this` groups.
        global_feature_conv (`list[int]`, defaults to `[128, 64, 128, 3, 1]`): the speaker encoder's convolutions as
            the original writes them: input channels (the encoder's channels after its middle stage), hidden
            channels, output channels (the speaker embedding's width), kernel size and stride.
        initializer_range (`float`, defaults to 0.01): std of the normal initialiser of the convolutions.
    """

    model_type = "vita_codec"
    base_config_key = "codec_config"

    sampling_rate: int = 24000
    codebook_size: int = 1024
    codebook_dim: int = 512
    upsample_rates: list[int] | tuple[int, ...] = (8, 5, 5, 3)
    upsample_kernel_sizes: list[int] | tuple[int, ...] = (16, 11, 11, 5)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: list[int] | tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: list | tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    resblock_type: str = "1"
    leaky_relu_slope: float = 0.1
    global_code_num: int = 8
    global_codebook_size: int = 1024
    global_code_dim: int = 16
    global_tokens: list[int] | tuple[int, ...] = DEFAULT_GLOBAL_TOKENS
    speaker_channels: int = 128
    encoder_initial_channel: int = 32
    encoder_channels_per_group: int = 16
    global_feature_conv: list[int] | tuple[int, ...] = (128, 64, 128, 3, 1)
    initializer_range: float = 0.01

    def __post_init__(self, **kwargs):
        # Lists, so that a config and its JSON round trip compare equal.
        self.upsample_rates = _as_int_list("upsample_rates", self.upsample_rates)
        num_stages = len(self.upsample_rates)
        self.upsample_kernel_sizes = _as_int_list("upsample_kernel_sizes", self.upsample_kernel_sizes, num_stages)
        self.resblock_kernel_sizes = _as_int_list("resblock_kernel_sizes", self.resblock_kernel_sizes)
        self.resblock_dilation_sizes = [
            _as_int_list("resblock_dilation_sizes", dilations) for dilations in self.resblock_dilation_sizes
        ]
        self.global_tokens = _as_int_list("global_tokens", self.global_tokens, self.global_code_num)
        self.global_feature_conv = _as_int_list("global_feature_conv", self.global_feature_conv, 5)
        self._validate_generator()
        self._validate_speaker()
        self._validate_encoder()
        super().__post_init__(**kwargs)

    def _validate_generator(self) -> None:
        # The encoder reads the speaker vector after stage `num_stages // 2 - 1`, so it needs two stages at least.
        if len(self.upsample_rates) < 2:
            raise ValueError(
                f"`upsample_rates` needs at least 2 stages (the encoder reads the speaker after its middle stage), "
                f"got {self.upsample_rates}."
            )
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes):
            # A transposed conv with padding (k - u) // 2 gives exactly T * u frames only when k - u is even and >= 0.
            if rate < 1 or kernel < rate or (kernel - rate) % 2:
                raise ValueError(
                    f"Stage with upsample rate {rate} and kernel {kernel}: the kernel must be at least the rate and "
                    f"differ from it by an even number (e.g. kernel {2 * rate}), so that the stage output is exactly "
                    "rate times longer."
                )
        if self.upsample_initial_channel % 2 ** len(self.upsample_rates):
            raise ValueError(
                f"`upsample_initial_channel` ({self.upsample_initial_channel}) must be divisible by "
                f"2 ** {len(self.upsample_rates)} (each stage halves the channels)."
            )
        if len(self.resblock_dilation_sizes) != len(self.resblock_kernel_sizes):
            raise ValueError(
                f"`resblock_dilation_sizes` has {len(self.resblock_dilation_sizes)} entries but "
                f"`resblock_kernel_sizes` has {len(self.resblock_kernel_sizes)}; give one dilation list per kernel."
            )
        expected = {"1": 3, "2": 2}.get(self.resblock_type)
        if expected is None:
            raise ValueError(f"`resblock_type` must be '1' or '2', got {self.resblock_type!r}.")
        for dilations in self.resblock_dilation_sizes:
            if len(dilations) != expected:
                raise ValueError(
                    f"`resblock_type` {self.resblock_type!r} takes {expected} dilations per block, got {dilations}."
                )

    def _validate_speaker(self) -> None:
        speaker_width = self.global_code_num * self.global_code_dim
        if self.speaker_channels != speaker_width:
            raise ValueError(
                f"`speaker_channels` ({self.speaker_channels}) must equal the speaker embedding's width, "
                f"global_code_num * global_code_dim = {speaker_width}, since the embedding is added to those channels."
            )
        if self.speaker_channels not in self.generator_stage_channels:
            raise ValueError(
                f"`speaker_channels` ({self.speaker_channels}) is not the output channel count of any generator "
                f"stage ({self.generator_stage_channels}); change `upsample_initial_channel` or the global code sizes."
            )
        for token in self.global_tokens:
            if not 0 <= token < self.global_codebook_size:
                raise ValueError(
                    f"`global_tokens` {self.global_tokens} holds {token}, outside [0, {self.global_codebook_size})."
                )

    def _validate_encoder(self) -> None:
        per_group = self.encoder_channels_per_group
        for channels in self.encoder_stage_channels:
            if channels < per_group or channels % (channels // per_group):
                raise ValueError(
                    f"Encoder stage with {channels} channels cannot be split in {channels // per_group} GroupNorm "
                    "groups; use an `encoder_initial_channel` whose doubles are multiples of "
                    f"`encoder_channels_per_group` ({per_group})."
                )
        middle_channels = self.encoder_stage_channels[len(self.upsample_rates) // 2 - 1]
        in_channels, _, out_channels, kernel_size, stride = self.global_feature_conv
        if in_channels != middle_channels or out_channels != self.speaker_channels:
            raise ValueError(
                f"`global_feature_conv` {self.global_feature_conv} must read the encoder's middle stage "
                f"({middle_channels} channels) and give the speaker width ({self.speaker_channels}); expected "
                f"[{middle_channels}, hidden, {self.speaker_channels}, kernel, stride]."
            )
        if kernel_size < stride or stride < 1:
            raise ValueError(f"`global_feature_conv` kernel ({kernel_size}) must be >= its stride ({stride}) >= 1.")

    @property
    def hop_length(self) -> int:
        """Audio samples per codec token: the product of the upsample rates (600 for the released codec)."""
        return math.prod(self.upsample_rates)

    @property
    def receptive_field_samples(self) -> int:
        """Output samples on each side of a token's own `hop_length` samples that the token can still change.

        Tracks the span of samples a single token reaches through `conv_pre` (kernel 7), each stage's transposed
        convolution and widest residual block (a block's convolutions chain, so their reaches add), and `conv_post`.
        """
        low = high = 0  # the token's reach, in units of the current layer's frames
        low, high = low - 3, high + 3
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes):
            padding = (kernel - rate) // 2
            low, high = low * rate - padding, high * rate - padding + kernel - 1
            block_reach = 0
            for block_kernel, dilations in zip(self.resblock_kernel_sizes, self.resblock_dilation_sizes):
                half = (block_kernel - 1) // 2
                # Type "1" follows each dilated conv with an undilated one of the same kernel.
                extra = half * len(dilations) if self.resblock_type == "1" else 0
                block_reach = max(block_reach, half * sum(dilations) + extra)
            low, high = low - block_reach, high + block_reach
        low, high = low - 3, high + 3
        return max(-low, high - (self.hop_length - 1))

    @property
    def receptive_field_tokens(self) -> int:
        """Codec tokens of context on each side beyond which a token cannot change the audio; chunked decoding with
        at least this much padding on each side equals one-shot decoding (13 for the released codec)."""
        return math.ceil(self.receptive_field_samples / self.hop_length)

    @property
    def generator_stage_channels(self) -> list[int]:
        """Output channels of each generator stage (each halves the previous)."""
        return [self.upsample_initial_channel // 2 ** (i + 1) for i in range(len(self.upsample_rates))]

    @property
    def encoder_stage_channels(self) -> list[int]:
        """Output channels of each encoder stage (each doubles the previous)."""
        return [self.encoder_initial_channel * 2 ** (i + 1) for i in range(len(self.upsample_rates))]


__all__ = ["DEFAULT_GLOBAL_TOKENS", "VitaCodecConfig"]
