"""VITA-1.5's speech decoder: frames of the LLM's input embeddings in, codec tokens out (`LLM2TTSCodecAR`).

Built from transformers' Llama blocks (`LlamaDecoderLayer`, `LlamaRotaryEmbedding`, `LlamaRMSNorm`) and its
`DynamicCache`. The computation is the original's, including its quirks:
- the frames first pass a pre-network (`pre_layers`, its own rotary, positions 0..L-1) that attends bidirectionally;
- a BOS embedding goes in front, and the main layers read this prefix (positions 0..L) bidirectionally too. The
  original gets that from eager attention with no mask; here the mask is explicit and all-visible, because SDPA reads
  a missing mask as causal;
- decoding feeds SOS, then each sampled token, as one query at position = cache length, and stops at EOS (not
  emitted); sampling keeps the `top_k` most probable tokens, renormalised, through `torch.multinomial`;
- the optional repetition penalty divides the logit of a token once per occurrence in the window of past inputs
  (SOS included): the original iterates over a set of 0-d tensors, which are all distinct.
Two departures, both where the original would break: BOS, SOS and PAD are never sampled (the codec has no code for
them and the original would crash on one), and the training forward gives each sample of a padded batch the
positions that decoding gives it (the original's depend on the longest prefix in the batch; they agree without
padding). The training loss is the mean cross-entropy over the targets (the original sums).
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding
from transformers.utils import ModelOutput

from .configuration_vita_speech import SPEECH_SETTINGS_DEFAULTS, VitaSpeechDecoderConfig, check_speech_settings

logger = logging.getLogger(__name__)

_IGNORE = -100  # targets the loss skips


@dataclass
class VitaSpeechDecoderOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*):
        Mean cross-entropy of the codec tokens and the EOS after them, returned when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels + 1, vocab_size)`):
        Scores of the decoding steps: row t, whose input is SOS (t = 0) or label t-1, predicts label t, and the row
        after the last label predicts EOS. Without labels, the one row is the first step's.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


def _additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, queries, keys) booleans -> the (batch, 1, queries, keys) additive mask eager and SDPA both take.
    finfo.min rather than -inf keeps rows with nothing visible (padding) finite."""
    mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return mask.masked_fill(~visible, torch.finfo(dtype).min)[:, None]


def _lengths(mask: torch.Tensor | None, batch_size: int, width: int, name: str, device: torch.device) -> torch.Tensor:
    """Lengths of right-padded rows from a (batch, width) mask of 1s then 0s; a clear error for anything else."""
    if mask is None:
        return torch.full((batch_size,), width, dtype=torch.long, device=device)
    if mask.shape != (batch_size, width):
        raise ValueError(
            f"`{name}` has shape {tuple(mask.shape)}; expected ({batch_size}, {width}), one per position."
        )
    mask = mask.to(device=device, dtype=torch.bool)
    lengths = mask.sum(-1)
    if not torch.equal(mask, torch.arange(width, device=device)[None] < lengths[:, None]):
        raise ValueError(f"`{name}` must be 1 on a prefix of each row and 0 after it (right padding).")
    return lengths


def _masked_attention(requested: str | None) -> str | None:
    if requested in (None, "eager", "sdpa"):
        return requested
    logger.info("the speech decoder runs SDPA instead of %s: its prefix needs an additive mask", requested)
    return "sdpa"


def apply_repetition_penalty(logits: torch.Tensor, window: list[int], penalty: float) -> torch.Tensor:
    """The original's penalty: the logit of each token is divided by `penalty` once per occurrence in `window` (the
    last decoder inputs, SOS included), one division after the other as it rounds, not by `penalty ** k`. A negative
    logit rises. logits `(vocab,)` -> `(vocab,)`."""
    if not window:
        return logits
    counts = torch.bincount(torch.tensor(window), minlength=logits.shape[-1]).to(logits.device)
    for times in range(1, int(counts.max()) + 1):
        logits = torch.where(counts >= times, logits / penalty, logits)
    return logits


class VitaSpeechDecoder(PreTrainedModel):
    """Llama-style autoregressive decoder of codec tokens, conditioned on a bidirectional prefix of frames."""

    config: VitaSpeechDecoderConfig
    base_model_prefix = "decoder"
    main_input_name = "frames"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer"]
    _supports_sdpa = True
    _supports_attention_backend = False  # the prefix needs an additive 4-D mask, which eager and SDPA take
    _skip_keys_device_placement = ["cache"]
    # Its loss is a mean over the batch's codec tokens and ignores `num_items_in_batch`: the Trainer must scale it
    # for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: VitaSpeechDecoderConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.pre_layers = nn.ModuleList([LlamaDecoderLayer(config, i) for i in range(config.num_pre_layers)])
        self.pre_rotary_emb = LlamaRotaryEmbedding(config=config)
        self.layers = nn.ModuleList([LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.out_proj = nn.Linear(config.hidden_size, config.vocab_size)
        self.gradient_checkpointing = False
        self.post_init()

    # The bidirectional prefix needs an additive 4-D mask, which eager and SDPA take and flash or flex kernels do not:
    # a model-wide request for another implementation runs this decoder on SDPA (at init and on a later change).
    def _check_and_adjust_attn_implementation(self, attn_implementation: str | None, *args, **kwargs) -> str:
        return super()._check_and_adjust_attn_implementation(_masked_attention(attn_implementation), *args, **kwargs)

    def get_correct_attn_implementation(self, requested_attention: str | None, *args, **kwargs) -> str:
        return super().get_correct_attn_implementation(_masked_attention(requested_attention), *args, **kwargs)

    def _run_layers(
        self,
        layers: nn.ModuleList,
        rotary_emb: LlamaRotaryEmbedding,
        hidden_states: torch.Tensor,
        position_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        position_embeddings = rotary_emb(hidden_states, position_ids)
        for layer in layers:
            hidden_states = layer(
                hidden_states,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=cache is not None,
                position_embeddings=position_embeddings,
            )
        return hidden_states

    def check_frames(self, frames: torch.Tensor) -> None:
        """Refuse frames the decoder cannot read, with a `ValueError` naming what was found and expected."""
        width = self.config.input_dim
        if not torch.is_tensor(frames) or not frames.is_floating_point() or frames.ndim != 3:
            found = f"{frames.dtype} {tuple(frames.shape)}" if torch.is_tensor(frames) else type(frames).__name__
            raise ValueError(
                f"`frames` must be a float tensor of shape (batch, length, {width}), got {found}; reshape the LLM's "
                f"input embeddings of the text to rows of {width}."
            )
        if frames.shape[-1] != width or frames.shape[1] == 0:
            raise ValueError(
                f"`frames` has shape {tuple(frames.shape)}; expected (batch, length >= 1, {width}). Each row is "
                f"{width} consecutive values of the LLM's input embeddings, so give at least one text token."
            )
        if not torch.isfinite(frames).all():
            bad = int((~torch.isfinite(frames)).any(-1).sum())
            raise ValueError(
                f"`frames` holds NaN or inf in {bad} of {frames.shape[0] * frames.shape[1]} rows; expected finite "
                "values. Check the LLM's embedding weights (and their dtype) for the text tokens given."
            )

    def embed_prefix(self, frames: torch.FloatTensor, frames_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The prefix the main layers read: BOS embedding, then the pre-network's output over the frames.

        frames `(batch, length, input_dim)`, frames_mask `(batch, length)` (right padding) -> `(batch, length + 1,
        hidden_size)`.
        """
        self.check_frames(frames)
        frames = frames.to(self.device, self.dtype)
        batch_size, length, _ = frames.shape
        lengths = _lengths(frames_mask, batch_size, length, "frames_mask", frames.device)
        valid = torch.arange(length, device=frames.device)[None] < lengths[:, None]  # (batch, length)
        visible = valid[:, :, None] & valid[:, None, :]  # every real frame sees every real frame
        positions = torch.arange(length, device=frames.device)[None].expand(batch_size, -1)
        hidden_states = self._run_layers(
            self.pre_layers, self.pre_rotary_emb, frames, positions, _additive_mask(visible, self.dtype)
        )
        bos = torch.full((batch_size, 1), self.config.bos_token_id, dtype=torch.long, device=frames.device)
        return torch.cat([self.embed_tokens(bos), hidden_states], dim=1)  # (batch, length + 1, hidden)

    def forward(
        self,
        frames: torch.FloatTensor,
        frames_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        labels_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> VitaSpeechDecoderOutput:
        r"""
        Teacher-forced pass, as the original trains: the input is the prefix, then SOS and the codec tokens; the
        prefix sees the whole prefix, each token row sees the prefix and the rows up to itself.

        frames (`torch.FloatTensor` of shape `(batch_size, length, input_dim)`): the LLM input embeddings of each
            text, reshaped to rows of `input_dim`; right padded.
        frames_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*): 1 on real frames.
        labels (`torch.LongTensor` of shape `(batch_size, num_labels)`, *optional*): the codec tokens of each
            text's speech, right padded; the loss adds EOS after each.
        labels_mask (`torch.Tensor` of shape `(batch_size, num_labels)`, *optional*): 1 on real labels.
        """
        prefix = self.embed_prefix(frames, frames_mask)
        batch_size, prefix_width, _ = prefix.shape
        device = prefix.device
        frame_lengths = _lengths(frames_mask, batch_size, prefix_width - 1, "frames_mask", device)
        compute_loss = labels is not None
        if labels is None:
            labels = torch.zeros((batch_size, 0), dtype=torch.long, device=device)
        if labels.ndim != 2 or labels.shape[0] != batch_size or labels.is_floating_point():
            raise ValueError(
                f"`labels` must be integer codec tokens of shape ({batch_size}, num_labels), got {labels.dtype} "
                f"{tuple(labels.shape)}."
            )
        labels = labels.to(device)
        num_labels = labels.shape[1]
        label_lengths = _lengths(labels_mask, batch_size, num_labels, "labels_mask", device)
        real = torch.arange(num_labels, device=device)[None] < label_lengths[:, None]  # (batch, num_labels)
        codes = self.config.codec_vocab_size
        if bool(((labels < 0) | (labels >= codes))[real].any()):
            found = labels[real]
            raise ValueError(
                f"`labels` hold values in [{int(found.min())}, {int(found.max())}]; expected codec tokens in "
                f"[0, {codes}) where `labels_mask` is 1."
            )

        # Inputs SOS, y_0 .. y_{n-1}; targets y_0 .. y_{n-1}, EOS; padding embeds as PAD and is not scored.
        padded = labels.masked_fill(~real, self.config.pad_token_id)
        sos = torch.full((batch_size, 1), self.config.sos_token_id, dtype=torch.long, device=device)
        inputs = torch.cat([sos, padded], dim=1)  # (batch, num_labels + 1)
        steps = torch.arange(num_labels + 1, device=device)[None]
        targets = torch.cat([labels.masked_fill(~real, _IGNORE), labels.new_full((batch_size, 1), _IGNORE)], dim=1)
        targets = targets.masked_fill(steps == label_lengths[:, None], self.config.eos_token_id)

        hidden_states = torch.cat([prefix, self.embed_tokens(inputs)], dim=1)  # (batch, prefix + steps, hidden)
        # Positions as decoding has them: the prefix 0..L, the steps from L + 1 on (L = each sample's own length).
        prefix_positions = torch.arange(prefix_width, device=device)[None].expand(batch_size, -1)
        position_ids = torch.cat([prefix_positions, frame_lengths[:, None] + 1 + steps], dim=1)
        in_prefix = torch.arange(prefix_width, device=device)[None] < (frame_lengths + 1)[:, None]
        step_real = steps <= label_lengths[:, None]  # SOS and the real labels
        rows = torch.cat([in_prefix, step_real], dim=1)  # (batch, total)
        keys_prefix = torch.cat([in_prefix, torch.zeros_like(step_real)], dim=1)
        causal = torch.ones(num_labels + 1, num_labels + 1, dtype=torch.bool, device=device).tril()
        visible = rows[:, :, None] & keys_prefix[:, None, :]  # every real row sees the real prefix
        visible[:, prefix_width:, prefix_width:] |= causal[None] & step_real[:, :, None] & step_real[:, None, :]
        hidden_states = self._run_layers(
            self.layers, self.rotary_emb, hidden_states, position_ids, _additive_mask(visible, self.dtype)
        )
        logits = self.out_proj(self.norm(hidden_states[:, prefix_width:]))  # (batch, num_labels + 1, vocab)
        loss = None
        if compute_loss:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=_IGNORE)
        return VitaSpeechDecoderOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def generate_codec_tokens(
        self,
        frames: torch.FloatTensor,
        do_sample: bool = True,
        top_k: int = SPEECH_SETTINGS_DEFAULTS["top_k"],
        penalty_window_size: int = SPEECH_SETTINGS_DEFAULTS["penalty_window_size"],
        penalty: float = SPEECH_SETTINGS_DEFAULTS["penalty"],
        max_speech_tokens: int = SPEECH_SETTINGS_DEFAULTS["max_speech_tokens"],
        generator: torch.Generator | None = None,
    ) -> Iterator[int]:
        r"""
        Decode codec tokens one by one from the frames of one text; stops at EOS, which is not yielded, or after
        `max_speech_tokens`.

        frames (`torch.FloatTensor` of shape `(1, length, input_dim)`): the text's LLM input embeddings as rows.
        do_sample (`bool`): sample among the `top_k` most probable tokens; `False` takes the most probable (top_k 1).
        top_k (`int`), penalty_window_size (`int`), penalty (`float`), max_speech_tokens (`int`): see
            `VitaSpeechConfig`; the defaults are the original's.
        generator (`torch.Generator`, *optional*): the random source of the sampling.
        """
        settings = {"top_k": top_k, "penalty_window_size": penalty_window_size, "penalty": penalty,
                    "max_speech_tokens": max_speech_tokens}  # fmt: skip
        check_speech_settings(settings, self.config.vocab_size, "generate_codec_tokens")
        self.check_frames(frames)
        if frames.shape[0] != 1:
            raise ValueError(
                f"`frames` holds {frames.shape[0]} texts; expected 1 (shape (1, length, {self.config.input_dim})): "
                "speech is decoded one text at a time."
            )
        top_k = top_k if do_sample else 1
        config = self.config
        prefix = self.embed_prefix(frames)  # (1, L + 1, hidden)
        if prefix.shape[1] + max_speech_tokens > config.max_position_embeddings:
            logger.warning(
                "%d prefix rows plus up to %d codec tokens go past the decoder's %d positions; long texts are best "
                "spoken sentence by sentence.", prefix.shape[1], max_speech_tokens, config.max_position_embeddings,
            )  # fmt: skip
        cache = DynamicCache(config=config)
        everything = torch.zeros((1, 1, prefix.shape[1], prefix.shape[1]), dtype=self.dtype, device=prefix.device)
        positions = torch.arange(prefix.shape[1], device=prefix.device)[None]
        self._run_layers(self.layers, self.rotary_emb, prefix, positions, everything, cache)

        # Never sampled: they have no code in the codec (EOS ends the loop instead).
        unspeakable = torch.tensor(
            [config.bos_token_id, config.sos_token_id, config.pad_token_id], device=prefix.device
        )
        history = [config.sos_token_id]  # the decoder's inputs so far, as the penalty window counts them
        for _ in range(max_speech_tokens):
            token = torch.tensor([[history[-1]]], device=prefix.device)
            position = torch.tensor([[cache.get_seq_length()]], device=prefix.device)
            hidden_states = self._run_layers(
                self.layers, self.rotary_emb, self.embed_tokens(token), position, None, cache
            )
            logits = self.out_proj(self.norm(hidden_states))[0, -1]  # (vocab,)
            if penalty_window_size > 0:
                logits = apply_repetition_penalty(logits, history[-penalty_window_size:], penalty)
            probs = torch.softmax(logits.float(), dim=-1)
            probs[unspeakable] = 0.0
            top_probs, top_ids = torch.topk(probs, top_k)
            if top_k == 1:
                next_token = int(top_ids[0])
            else:
                probs = torch.zeros_like(probs).scatter_(0, top_ids, top_probs)
                next_token = int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
            if next_token == config.eos_token_id:
                return
            history.append(next_token)
            yield next_token


__all__ = ["VitaSpeechDecoder", "VitaSpeechDecoderOutput", "apply_repetition_penalty"]
