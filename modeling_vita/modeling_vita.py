"""VITA as a native transformers model: `VitaModel` and `VitaForConditionalGeneration`.

Layout and conventions follow transformers' Llava/InternVL (vision tower + projector + `language_model`, placeholder
masks and `masked_scatter`) and Qwen2-Audio/Gemma 4 (an audio tower whose padded outputs are dropped before the
scatter). Modalities:
- images and video frames: transformers' `InternVLVisionModel` (InternViT), last layer without CLS, the released
  model's 0.5 feature scale, 2x2 pixel shuffle, two-layer GELU MLP (`vision_projector_vita.py`): 256 tokens per 448
  tile or frame;
- audio: `VitaAudioEncoder` (VITA's "whale" encoder and CNN adapter), 12.5 tokens a second;
- text: any decoder LLM built with `AutoModel.from_config` (Mixtral-8x7B for the released checkpoint).
The processor expands each placeholder to exactly the number of features; the model checks the counts and raises a
`ValueError` naming both when they differ. Multimodal inputs are read only on the first generation step (their names
are in transformers' `MULTIMODAL_INPUTS_TO_DROP_OUTSIDE_PREFILL`); beam search and `num_return_sequences` repeat
each sample's media as a group (`media_expansion_vita.py`).
"""

import inspect
import logging
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
)
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import select_hidden_states

from .audio_encoder import VitaAudioEncoder, VitaAudioEncoderOutput
from .configuration_vita import VitaConfig
from .media_expansion_vita import pop_expanded_media
from .remote_code import write_remote_code
from .speech_generation_vita import VitaSpeechGenerationMixin, VitaSpeechModel
from .validation_vita import check_model_inputs
from .vision_projector_vita import VitaMultiModalProjector, pixel_shuffle

logger = logging.getLogger(__name__)


@dataclass
class VitaModelOutputWithPast(MultimodalBaseModelOutputWithPast):
    r"""
    router_logits (`tuple(torch.FloatTensor)`, *optional*):
        Router logits of each MoE layer of the LLM, returned with `output_router_logits=True` (Mixtral).
    """

    router_logits: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VitaCausalLMOutputWithPast(MultimodalCausalLMOutputWithPast):
    r"""
    aux_loss (`torch.FloatTensor`, *optional*):
        MoE load-balancing loss, returned with `output_router_logits=True`; already added to `loss`, scaled by
        `text_config.router_aux_loss_coef`.
    router_logits (`tuple(torch.FloatTensor)`, *optional*):
        Router logits of each MoE layer of the LLM.
    """

    aux_loss: torch.FloatTensor | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None


# Written into `config.json` on save so a saved folder loads through every Auto class with `trust_remote_code=True`.
AUTO_MAP = {
    "AutoConfig": "configuration_vita.VitaConfig",
    "AutoModel": "modeling_vita.VitaForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_vita.VitaForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_vita.VitaForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_vita.VitaForConditionalGeneration",
}


class VitaPreTrainedModel(PreTrainedModel):
    config: VitaConfig
    base_model_prefix = "model"
    # The pipelines read these: "any-to-any" and "image-text-to-text" take VITA's inputs; it answers in text.
    input_modalities = ("image", "video", "audio", "text")
    output_modalities = ("text",)
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["cache", "past_key_values"]
    # Flash/flex requests are honoured by the vision tower and the LLM; the audio encoder needs an additive
    # position bias and runs SDPA for any non-eager setting.
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Every Auto class loads a saved folder with `trust_remote_code=True`: the map names them all, and the folder
        # carries the code they reach (remote_code.py).
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        write_remote_code(save_directory)
        return result


class VitaModel(VitaPreTrainedModel):
    """Vision tower + projector, audio encoder (with adapter) and the LLM, without the LM head."""

    def __init__(self, config: VitaConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = VitaMultiModalProjector(config)
        self.audio_tower = VitaAudioEncoder._from_config(config.audio_config)
        self.language_model = AutoModel.from_config(config.text_config)
        # Under ZeRO-3/FSDP every rank must run every sharded tower in each step, or the ranks whose batch lacks a
        # modality wait forever on the others' all-gathers; training scripts set this when they shard.
        self.run_idle_towers = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    @merge_with_config_defaults
    @can_return_tuple
    @select_hidden_states("vision_feature_layer")
    def get_image_features(
        self, pixel_values: torch.FloatTensor, vision_feature_layer: int | None = None, **kwargs
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_tiles, 3, image_size, image_size)`):
            All tiles of all images (or all video frames), normalised by the image processor.
        vision_feature_layer (`int`, *optional*): the vision tower layer whose output is used; defaults to
            `config.vision_feature_layer`.

        Returns the vision tower's output (`last_hidden_state` with the CLS token, `hidden_states` and `attentions`
        when asked) with `pooler_output` set to the projected features the LLM receives, of shape
        `(num_tiles, image_seq_length, text_hidden_size)`.
        """
        vision_outputs = self.vision_tower(
            pixel_values=pixel_values.to(self.vision_tower.dtype), return_dict=True, **kwargs
        )
        if vision_feature_layer == -1:
            features = vision_outputs.last_hidden_state
        else:
            features = vision_outputs.hidden_states[vision_feature_layer]
        features = features[:, 1:, :]  # drop CLS: (num_tiles, patches, vision_hidden)
        grid = int(features.shape[1] ** 0.5)
        features = features.reshape(features.shape[0], grid, grid, -1) * self.config.vision_feature_scale
        features = pixel_shuffle(features, self.config.downsample_ratio)  # (num_tiles, tokens, 4 * vision_hidden)
        vision_outputs.pooler_output = self.multi_modal_projector(features)
        return vision_outputs

    @can_return_tuple
    def get_video_features(
        self, pixel_values_videos: torch.FloatTensor, **kwargs
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(num_frames, 3, image_size, image_size)`):
            All frames of all videos: single tiles through the same tower and projector as images.

        Returns the vision tower's output with `pooler_output` of shape `(num_frames, image_seq_length,
        text_hidden_size)`, as `get_image_features`.
        """
        return self.get_image_features(pixel_values_videos, return_dict=True, **kwargs)

    @can_return_tuple
    def get_audio_features(
        self,
        input_features: torch.FloatTensor,
        input_features_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple | VitaAudioEncoderOutput:
        r"""
        input_features (`torch.FloatTensor` of shape `(num_clips, num_frames, num_mel_bins)`):
            Fbank frames after CMVN, right padded.
        input_features_mask (`torch.Tensor` of shape `(num_clips, num_frames)`, *optional*): 1 on real frames.

        Returns the audio tower's output (`last_hidden_state`, `hidden_states` and `attentions` of its transformer;
        `attention_mask` marks the adapter outputs of real audio) with `pooler_output` set to the features the LLM
        receives: the adapter outputs of real audio, clip after clip, of shape `(num_audio_tokens, text_hidden_size)`.
        """
        audio_outputs = self.audio_tower(input_features, input_features_mask, return_dict=True, **kwargs)
        audio_outputs.pooler_output = audio_outputs.pooler_output[audio_outputs.attention_mask.bool()]
        return audio_outputs

    def get_placeholder_mask(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        token_id: int,
        features: torch.Tensor,
        modality: str,
    ) -> torch.BoolTensor:
        """Mask of the `token_id` placeholders, of shape `(batch, seq, 1)`; raises if their count differs from the
        number of feature vectors."""
        if input_ids is None:
            placeholder = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
            mask = (inputs_embeds == placeholder).all(-1)
        else:
            mask = input_ids == token_id
        num_tokens, num_features = int(mask.sum()), features.shape[0]
        if num_tokens != num_features:
            raise ValueError(
                f"{modality.capitalize()} features and {modality} tokens do not match, tokens: {num_tokens}, "
                f"features: {num_features}. Build the inputs with VitaProcessor, which expands each <{modality}> "
                "placeholder to the number of features the model produces, and do not truncate inside media spans."
            )
        return mask.unsqueeze(-1).to(inputs_embeds.device)

    def _scatter(self, input_ids, inputs_embeds, token_id, features, modality):
        features = features.to(inputs_embeds.device, inputs_embeds.dtype)
        mask = self.get_placeholder_mask(input_ids, inputs_embeds, token_id, features, modality)
        return inputs_embeds.masked_scatter(mask, features)

    def _run_idle_towers(self, inputs_embeds, vision_outputs, audio_outputs) -> torch.Tensor:
        """Run the towers this batch did not use on a minimal dummy input and add 0 x their output, so every rank
        takes part in the same collectives and gradients (zeros) reach every trainable tower parameter."""
        zero = inputs_embeds.new_zeros(())
        if vision_outputs is None:
            size = self.config.vision_config.image_size
            dummy = inputs_embeds.new_zeros((1, self.config.vision_config.num_channels, size[0], size[1]))
            zero = zero + self.get_image_features(dummy, return_dict=True).pooler_output.sum() * 0.0
        if audio_outputs is None:
            # 7 fbank frames are the fewest that give one audio token.
            dummy = inputs_embeds.new_zeros((1, 7, self.config.audio_config.num_mel_bins))
            zero = zero + self.get_audio_features(dummy, return_dict=True).pooler_output.sum() * 0.0
        return inputs_embeds + zero.to(inputs_embeds.dtype)

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        image_num_patches: torch.LongTensor | None = None,
        video_num_frames: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_router_logits: bool | None = None,
        **kwargs,
    ) -> VitaModelOutputWithPast:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_tiles, 3, image_size, image_size)`, *optional*):
            Tiles of every image in the batch, in placeholder order.
        pixel_values_videos (`torch.FloatTensor` of shape `(num_frames, 3, image_size, image_size)`, *optional*):
            Frames of every video in the batch, in placeholder order.
        input_features (`torch.FloatTensor` of shape `(num_clips, num_frames, num_mel_bins)`, *optional*):
            Fbank frames of every audio clip in the batch, right padded.
        input_features_mask (`torch.Tensor` of shape `(num_clips, num_frames)`, *optional*): 1 on real frames.
        image_num_patches (`torch.LongTensor` of shape `(num_images,)`, *optional*): tiles per image (checked).
        video_num_frames (`torch.LongTensor` of shape `(num_videos,)`, *optional*): frames per video (checked).
        output_router_logits (`bool`, *optional*): return the MoE router logits of the LLM.
        """
        check_model_inputs(
            self, input_ids, inputs_embeds, attention_mask, cache, pixel_values, pixel_values_videos,
            image_num_patches, video_num_frames, input_features, input_features_mask,
        )  # fmt: skip
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        # Tower attentions and hidden states come back when the caller asks the same of the LLM (or the tower's
        # config does).
        tower_kwargs = {key: kwargs[key] for key in ("output_attentions", "output_hidden_states") if key in kwargs}
        image_outputs = video_outputs = audio_outputs = None
        if pixel_values is not None:
            image_outputs = self.get_image_features(pixel_values, return_dict=True, **tower_kwargs)
            image_features = image_outputs.pooler_output.flatten(0, 1)
            inputs_embeds = self._scatter(
                input_ids, inputs_embeds, self.config.image_token_id, image_features, "image"
            )
        if pixel_values_videos is not None:
            video_outputs = self.get_video_features(pixel_values_videos, return_dict=True, **tower_kwargs)
            video_features = video_outputs.pooler_output.flatten(0, 1)
            inputs_embeds = self._scatter(
                input_ids, inputs_embeds, self.config.video_token_id, video_features, "video"
            )
        if input_features is not None:
            audio_outputs = self.get_audio_features(
                input_features, input_features_mask, return_dict=True, **tower_kwargs
            )
            audio_features = audio_outputs.pooler_output
            inputs_embeds = self._scatter(
                input_ids, inputs_embeds, self.config.audio_token_id, audio_features, "audio"
            )

        if self.training and self.run_idle_towers:
            inputs_embeds = self._run_idle_towers(inputs_embeds, image_outputs or video_outputs, audio_outputs)
        if output_router_logits is not None:
            kwargs["output_router_logits"] = output_router_logits
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        return VitaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
            video_outputs=video_outputs,
            audio_outputs=audio_outputs,
            router_logits=getattr(outputs, "router_logits", None),
        )


class VitaForConditionalGeneration(VitaSpeechGenerationMixin, VitaPreTrainedModel, GenerationMixin):
    """VITA with its LM head: `generate` answers from text, image, video and audio inputs."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: VitaConfig):
        super().__init__(config)
        self.model = VitaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.speech_model = VitaSpeechModel._from_config(config.speech_config) if config.speech_config else None
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def get_decoder(self) -> nn.Module:
        return self.model.language_model

    def get_image_features(self, pixel_values: torch.FloatTensor, **kwargs) -> tuple | BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, **kwargs)

    def get_video_features(
        self, pixel_values_videos: torch.FloatTensor, **kwargs
    ) -> tuple | BaseModelOutputWithPooling:
        return self.model.get_video_features(pixel_values_videos, **kwargs)

    def get_audio_features(
        self, input_features: torch.FloatTensor, input_features_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple | VitaAudioEncoderOutput:
        return self.model.get_audio_features(input_features, input_features_mask, **kwargs)

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple[torch.LongTensor | None, dict]:
        # Beam search and num_return_sequences: media are repeated per sample, not per tile/frame/clip.
        media = pop_expanded_media(self, input_ids, kwargs, expand_size)
        input_ids, kwargs = super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **kwargs)
        return input_ids, {**kwargs, **media}

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        image_num_patches: torch.LongTensor | None = None,
        video_num_frames: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_router_logits: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> VitaCausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets (unshifted, as `input_ids`); -100 on positions without loss (prompt, padding, media).
        output_router_logits (`bool`, *optional*):
            For MoE LLMs: return router logits and add `router_aux_loss_coef` x load-balancing loss to `loss`.
            Defaults to `text_config.output_router_logits`.

        See [`VitaModel.forward`] for the multimodal inputs.
        """
        text_config = self.config.text_config
        if output_router_logits is None:
            output_router_logits = getattr(text_config, "output_router_logits", None)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            input_features=input_features,
            input_features_mask=input_features_mask,
            image_num_patches=image_num_patches,
            video_num_frames=video_num_frames,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_router_logits=output_router_logits,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=text_config.vocab_size, **kwargs)

        aux_loss = None
        if output_router_logits and outputs.router_logits is not None:
            aux_loss = load_balancing_loss_func(
                outputs.router_logits,
                getattr(text_config, "num_local_experts", None) or text_config.num_experts,
                text_config.num_experts_per_tok,
                attention_mask,
            )
            if loss is not None:
                loss = loss + text_config.router_aux_loss_coef * aux_loss.to(loss.device)

        return VitaCausalLMOutputWithPast(
            loss=loss,
            aux_loss=aux_loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
            video_outputs=outputs.video_outputs,
            audio_outputs=outputs.audio_outputs,
            router_logits=outputs.router_logits,
        )


# For remote-code models `generate` inspects `forward` at every decoding step (a transformers BC check); a precomputed
# signature turns that from ~0.1 ms of introspection into an attribute read.
VitaForConditionalGeneration.forward.__signature__ = inspect.signature(VitaForConditionalGeneration.forward)

__all__ = ["AUTO_MAP", "VitaPreTrainedModel", "VitaModel", "VitaForConditionalGeneration", "pixel_shuffle"]
