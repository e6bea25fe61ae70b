"""Configurations of VITA: the audio encoder config and the composite `VitaConfig`.

Written in the transformers 5.x dataclass style (see `InternVLConfig` and `Gemma4Config` in transformers): typed
fields with defaults, sub-configs declared in `sub_configs_defaults`. The defaults reproduce the shapes of the
released VITA-1.0 checkpoint (Mixtral-8x7B with a 51,760-row vocabulary, InternViT-300M-448px, the 24-layer "whale"
audio encoder with its CNN adapter).
"""

import logging

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, InternVLVisionConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_vita_speech import VitaSpeechConfig

try:  # Hub remote code: a checkpoint folder holds processing_vita's files beside these
    from .tokenization_vita import checked_state_tokens
except ImportError:  # this project's source tree: processing_vita is a sibling package
    from processing_vita.tokenization_vita import checked_state_tokens

logger = logging.getLogger(__name__)

# InternViT-300M-448px expressed with transformers' native InternVL vision config. `use_mean_pooling=True` makes the
# final layernorm an identity, as InternViT has none; the other settings match the original tower exactly.
INTERNVIT_300M_448PX = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "attention_bias": True,
    "use_qk_norm": False,
    "norm_type": "layer_norm",
    "layer_norm_eps": 1e-6,
    "image_size": 448,
    "patch_size": 14,
    "use_mean_pooling": True,
    "layer_scale_init_value": 0.1,
}

# The LLM of the released checkpoint: Mixtral-8x7B with the Chinese-extended vocabulary.
MIXTRAL_8X7B_VITA = {
    "vocab_size": 51760,
    "max_position_embeddings": 32768,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
    "router_aux_loss_coef": 0.02,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


@strict
class VitaAudioEncoderConfig(PreTrainedConfig):
    r"""
    Configuration of [`VitaAudioEncoder`], VITA's speech encoder ("whale"): Kaldi fbank frames in, a 4x CNN
    subsampling, a pre-norm transformer with Transformer-XL style positional biases, then a CNN adapter (one more 2x
    subsampling) that maps to the LLM width. 12.5 output vectors a second of audio.

    Args:
        num_mel_bins (`int`, defaults to 80): fbank bins of the input features.
        hidden_size (`int`, defaults to 1024): width of the encoder.
        num_hidden_layers (`int`, defaults to 24): number of transformer blocks.
        num_attention_heads (`int`, defaults to 16): attention heads per block.
        intermediate_size (`int`, defaults to 4096): width of the feed-forward block.
        hidden_act (`str`, defaults to `"relu"`): activation of the feed-forward block.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of the encoder's layer norms.
        dropout (`float`, defaults to 0.1): dropout on residual branches and embeddings (training only).
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities.
        max_source_positions (`int`, defaults to 5000): length of the sinusoidal position table, in encoder frames
            (40 ms each), so about 200 s of audio.
        adapter_kernel_size (`int`, defaults to 5): kernel of the adapter's strided Conv1d.
        adapter_layer_norm_eps (`float`, defaults to 1e-3): epsilon of the adapter's layer norm.
        adapter_hidden_act (`str`, defaults to `"gelu"`): activation of the adapter.
        output_size (`int`, defaults to 4096): width of the adapter's output, the LLM width. `VitaConfig` sets it to
            `text_config.hidden_size`.
        initializer_range (`float`, defaults to 0.02): std of the normal initialiser.
    """

    model_type = "vita_audio_encoder"
    base_config_key = "audio_config"

    num_mel_bins: int = 80
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "relu"
    layer_norm_eps: float = 1e-5
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.0
    max_source_positions: int = 5000
    adapter_kernel_size: int = 5
    adapter_layer_norm_eps: float = 1e-3
    adapter_hidden_act: str = "gelu"
    output_size: int = 4096
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}); pick a head count that divides the width."
            )
        super().__post_init__(**kwargs)


def check_speech_width(llm_width: int, speech_config: VitaSpeechConfig) -> None:
    """The speech decoder reads each token's LLM embedding as rows of its input width, which must divide it."""
    rows = speech_config.decoder_config.input_dim
    if llm_width % rows:
        raise ValueError(
            f"The LLM width ({llm_width}) is not a multiple of the speech decoder's input width "
            f"(speech_config.decoder_config.input_dim = {rows}); each token's embedding must split into whole rows "
            "(VITA-1.5: 3584 = 4 x 896)."
        )


@strict
class VitaConfig(PreTrainedConfig):
    r"""
    Configuration of [`VitaForConditionalGeneration`]: an LLM (`text_config`, any causal LM of transformers; Mixtral
    by default), transformers' InternVL vision tower (`vision_config`), VITA's audio encoder (`audio_config`) and the
    MLP projector that maps pixel-shuffled vision features to the LLM width.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*): the LLM; defaults to Mixtral-8x7B as released by VITA.
        vision_config (`dict` or `InternVLVisionConfig`, *optional*): defaults to InternViT-300M-448px.
        audio_config (`dict` or `VitaAudioEncoderConfig`, *optional*): defaults to the released audio encoder.
        image_token_id (`int`): id of the `<image>` placeholder; one per vision token of each image tile.
        video_token_id (`int`): id of the `<video>` placeholder; one per vision token of each video frame.
        audio_token_id (`int`): id of the `<audio>` placeholder; one per audio encoder output vector.
        downsample_ratio (`float`, defaults to 0.5): pixel-shuffle ratio (2x2 patches into one token).
        vision_feature_layer (`int`, defaults to -1): vision tower layer whose output is used.
        vision_feature_scale (`float`, defaults to 0.5): the released model multiplies the vision features by 0.5
            before the pixel shuffle (the original passed the shuffle ratio as a multiplier); its projector weights
            expect it, so it is kept as a setting. Use 1.0 for new trainings if you prefer.
        projector_hidden_act (`str`, defaults to `"gelu"`): activation of the two-layer vision projector.
        state_tokens (`dict[str, str]`, defaults to `{"query_audio": "<1>", "noisy_audio": "<2>", "query_text":
            "<3>"}`): the strings that open every answer, by state (a spoken query, noisy audio not meant for the
            assistant, a typed query). They drive the state constraint of generation, the duplex session and the
            pipeline; the processor's `state_tokens` must be the same. A list gives them in that order.
        tie_word_embeddings (`bool`, defaults to `False`): the released Mixtral has an untied LM head.
        speech_config (`dict` or `VitaSpeechConfig`, *optional*): VITA-1.5's own voice (speech decoder and codec),
            for checkpoints that carry one; `None` (the default) builds no speech model. Its decoder reads the LLM's
            input embeddings cut into rows of `decoder_config.input_dim`, which must divide the LLM width.
    """

    model_type = "vita"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="mixtral", init_kwargs=MIXTRAL_8X7B_VITA),
        "vision_config": SubConfigSpec(config_class=InternVLVisionConfig, init_kwargs=INTERNVIT_300M_448PX),
        "audio_config": VitaAudioEncoderConfig,
        "speech_config": SubConfigSpec(config_class=VitaSpeechConfig, optional=True),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    # Placeholders sit in the unused rows past the 51,747 tokens of the released tokenizer; the conversion script
    # writes the ids the converted tokenizer actually gives them.
    image_token_id: int = 51747
    video_token_id: int = 51748
    audio_token_id: int = 51749
    downsample_ratio: float = 0.5
    vision_feature_layer: int = -1
    vision_feature_scale: float = 0.5
    projector_hidden_act: str = "gelu"
    state_tokens: dict | list | None = None
    tie_word_embeddings: bool = False
    speech_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # The adapter maps audio to the LLM width by definition, so the LLM decides it.
        self.audio_config.output_size = self.text_config.hidden_size
        self.state_tokens = checked_state_tokens(self.state_tokens)
        if not 0 < self.downsample_ratio <= 1 or int(1 / self.downsample_ratio) != 1 / self.downsample_ratio:
            raise ValueError(
                f"`downsample_ratio` must be 1/k for an integer k (0.5 merges 2x2 patches), got "
                f"{self.downsample_ratio}."
            )
        placeholder_ids = {"image": self.image_token_id, "video": self.video_token_id, "audio": self.audio_token_id}
        if len(set(placeholder_ids.values())) != 3:
            raise ValueError(f"Placeholder token ids must differ, got {placeholder_ids}.")
        vocab_size = self.text_config.vocab_size
        for name, token_id in placeholder_ids.items():
            if not 0 <= token_id < vocab_size:
                raise ValueError(
                    f"`{name}_token_id` is {token_id}, outside the LLM vocabulary [0, {vocab_size}); add the "
                    "placeholder tokens to the tokenizer and resize the embeddings first."
                )
        if self.speech_config is not None:
            check_speech_width(self.text_config.hidden_size, self.speech_config)

    @property
    def image_seq_length(self) -> int:
        """Vision tokens per tile or frame: patches per side squared, times the pixel-shuffle ratio squared."""
        image_size = self.vision_config.image_size[0]
        patch_size = self.vision_config.patch_size[0]
        return int((image_size // patch_size) ** 2 * self.downsample_ratio**2)


__all__ = ["VitaAudioEncoderConfig", "VitaConfig", "check_speech_width"]
