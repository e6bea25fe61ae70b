"""The two tower folders the original VITA checkpoints name in `config.json`, and the original audio features.

VITA-1.0 and VITA-1.5 both point `mm_vision_tower` at an InternViT-300M-448px folder and `mm_audio_encoder` at a
whale audio-encoder folder. Both are written here from a checkpoint's state dict, in the schemas the original code
reads: the InternViT folder with its own `config.json` (the published InternViT fields), `preprocessor_config.json`
and `model.safetensors`; the whale folder with `train.yaml` (the keys `whaleEncoder`'s argparse options and
`init_model` read), a WeNet JSON `global_cmvn` and `final.pt`. The tower weights of both folders are OLDER than the
checkpoint's (`model.safetensors` of the checkpoint is authoritative in the original, and the adapter in `final.pt`
is the stage-2 one), so reading them instead of the checkpoint is caught. `fbank_for` computes the original's audio
features from a waveform. Plain torch: nothing of this project's model code is used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi
import yaml
from safetensors.torch import save_file

VISION_PREFIX = "model.vision_tower.vision_tower."
AUDIO_PREFIX = "model.audio_encoder."
CMVN_MEAN, CMVN_ISTD = AUDIO_PREFIX + "encoder.global_cmvn.mean", AUDIO_PREFIX + "encoder.global_cmvn.istd"
SAMPLE_RATE = 16000


def count_layers(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of `{prefix}{i}.` blocks in `sd`."""
    return len({key[len(prefix) :].split(".")[0] for key in sd if key.startswith(prefix)})


def _older(tensor: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The same tensor as an earlier training stage left it: visibly different values, same shape."""
    return (tensor + 0.1 * torch.randn(tensor.shape, generator=gen)).contiguous()


# ------------------------------------------------------------------------------------------------ InternViT folder
def internvit_config(state_dict: Mapping[str, torch.Tensor], heads: int) -> dict:
    """`config.json` of the InternViT folder, fields as the published InternViT-300M-448px file, tiny values read
    from the checkpoint's vision tensors (the head count is not in the shapes, so it is passed)."""
    patch = state_dict[VISION_PREFIX + "embeddings.patch_embedding.weight"]
    grid = round((state_dict[VISION_PREFIX + "embeddings.position_embedding"].shape[1] - 1) ** 0.5)
    return {
        "architectures": ["InternVisionModel"],
        "auto_map": {
            "AutoConfig": "configuration_intern_vit.InternVisionConfig",
            "AutoModel": "modeling_intern_vit.InternVisionModel",
        },
        "attention_dropout": 0.0,
        "drop_path_rate": 0.1,
        "dropout": 0.0,
        "hidden_act": "gelu",
        "hidden_size": patch.shape[0],
        "image_size": grid * patch.shape[-1],
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": state_dict[VISION_PREFIX + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        "layer_norm_eps": 1e-06,
        "model_type": "intern_vit_6b",
        "norm_type": "layer_norm",
        "num_attention_heads": heads,
        "num_channels": 3,
        "num_hidden_layers": count_layers(state_dict, VISION_PREFIX + "encoder.layers."),
        "patch_size": patch.shape[-1],
        "qk_normalization": False,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": "4.37.2",
        "use_flash_attn": True,
    }


def write_vision_tower_folder(
    folder: Path, state_dict: Mapping[str, torch.Tensor], heads: int, older_seed: int = 1
) -> Path:
    """InternViT folder: `config.json`, `preprocessor_config.json` (CLIPImageProcessor) and `model.safetensors` with
    OLDER tower weights under InternViT's own names (`embeddings.*`, `encoder.layers.*`)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = internvit_config(state_dict, heads)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    size = config["image_size"]
    processor = {
        "crop_size": size,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "resample": 3,
        "size": size,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    gen = torch.Generator().manual_seed(older_seed)
    weights = {k[len(VISION_PREFIX) :]: _older(v, gen) for k, v in state_dict.items() if k.startswith(VISION_PREFIX)}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


# ---------------------------------------------------------------------------------------------------- whale folder
def whale_train_yaml(state_dict: Mapping[str, torch.Tensor], llm_path: str, cmvn_file: str) -> dict:
    """`train.yaml` in the original whale schema, every dimension read from the checkpoint's audio tensors."""
    enc = AUDIO_PREFIX + "encoder.enc."
    hidden = state_dict[enc + "0.core.conv.0.weight"].shape[0]
    mels = state_dict[CMVN_MEAN].shape[0]
    transformer = {
        "transformer-input-dim": hidden,
        "transformer-output-dim": hidden,
        "transformer-attention-dim": hidden,
        "transformer-attention-heads": state_dict[enc + "1.encoders.0.self_attn.pos_bias_u"].shape[0],
        "transformer-linear-units": state_dict[enc + "1.encoders.0.feed_forward.w_1.weight"].shape[0],
        "transformer-num-blocks": count_layers(state_dict, enc + "1.encoders."),
        "transformer-dropout-rate": 0.1,
        "transformer-positional-dropout-rate": 0.1,
        "transformer-attention-dropout-rate": 0.0,
        "transformer-input-layer": "linear",
        "transformer-pos-enc-class": "rel-enc",
        "transformer-normalize-before": True,
        "transformer-concat-after": False,
        "transformer-positionwise-layer-type": "linear",
        "transformer-positionwise-conv-kernel_size": 1,
        "transformer-chunk_size": -1,
        "transformer-left_chunks": -1,
        "transformer-dynamic-chunks": False,  # the default (true) draws random chunk masks even at inference
    }
    adapter = state_dict[AUDIO_PREFIX + "adpter.conv1d2.weight"]
    return {
        "input_dim": mels,
        "cmvn_file": cmvn_file,
        "is_json_cmvn": True,
        "encoder_conf": {
            "overview_conf": {
                "encoder-input-dim": mels,
                "encoder-output-dim": hidden,
                "encoder-layer-config": "subsampling-transformer",
            },
            "para_conf": {
                "subsampling": {
                    "subsampling-rate": 4,
                    "subsampling-input-dim": mels,
                    "subsampling-output-dim": hidden,
                    "subsampling-dropout-rate": 0.1,
                },
                "transformer": transformer,
            },
        },
        "model_conf": {
            "llm_path": llm_path,  # a required argument of `audioEncoder`; the builder never loads it
            "freeze_llm": True,
            "enc_out_dim": hidden,
            "llm_embed_dim": state_dict[AUDIO_PREFIX + "adpter.project.weight"].shape[0],
            "kernel_size": adapter.shape[-1],
            "adpter_type": "subsampling",
            "activation_func": "gelu",
            "norm": "layer",
        },
        "dataset_conf": {
            "resample_conf": {"resample_rate": SAMPLE_RATE},
            "fbank_conf": {"num_mel_bins": mels, "frame_length": 25, "frame_shift": 10, "dither": 0.0},
        },
    }


def global_cmvn_stats(state_dict: Mapping[str, torch.Tensor], frame_num: int = 1000) -> dict:
    """WeNet JSON stats (`mean_stat`, `var_stat`, `frame_num`) that `load_cmvn_json` turns back into the buffers."""
    mean, istd = state_dict[CMVN_MEAN].double(), state_dict[CMVN_ISTD].double()
    variance = 1.0 / istd**2
    return {
        "mean_stat": (mean * frame_num).tolist(),
        "var_stat": ((variance + mean**2) * frame_num).tolist(),
        "frame_num": frame_num,
    }


def write_audio_encoder_folder(
    folder: Path,
    state_dict: Mapping[str, torch.Tensor],
    frame_num: int = 1000,
    *,
    llm_path: str = "/mnt/authors/LLM",
    older_seed: int = 2,
) -> Path:
    """Whale folder: `train.yaml` (original schema), `global_cmvn` (WeNet JSON) and `final.pt`, a plain
    `audioEncoder.state_dict()` (`encoder.*` as in the checkpoint, `adpter.*` OLDER) saved with `torch.save`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "global_cmvn").write_text(json.dumps(global_cmvn_stats(state_dict, frame_num)))
    cmvn_file = f"/mnt/authors/{folder.name}/global_cmvn"  # the training machine's path; the builder overrides it
    train = whale_train_yaml(state_dict, llm_path, cmvn_file)
    (folder / "train.yaml").write_text(yaml.safe_dump(train, sort_keys=False))
    gen = torch.Generator().manual_seed(older_seed)
    audio = {k[len(AUDIO_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(AUDIO_PREFIX)}
    # `whaleEncoder` registers `enc` before `global_cmvn`; the adapter comes after the encoder.
    final = {k: v.clone() for k, v in audio.items() if k.startswith("encoder.enc.")}
    final.update({k: v.clone() for k, v in audio.items() if k.startswith("encoder.global_cmvn.")})
    final.update({k: _older(v, gen) for k, v in audio.items() if k.startswith("adpter.")})
    torch.save(final, folder / "final.pt")
    return folder


# ------------------------------------------------------------------------------------------------- audio features
def fbank_for(
    waveform: torch.Tensor,
    cmvn: Mapping[str, torch.Tensor] | tuple[torch.Tensor, torch.Tensor] | None = None,
    sample_rate: int = SAMPLE_RATE,
    num_mel_bins: int = 80,
) -> torch.Tensor:
    """Features of one mono waveform in [-1, 1] as `audioEncoderProcessor.process` computes them: resample to
    16 kHz, x 32768, Kaldi fbank (25 / 10 ms, dither 0, energy floor 0). Returns (frames, num_mel_bins).

    Without `cmvn` these are the RAW features the original model takes (its encoder applies the global CMVN, as
    `whale_audio` does). With `cmvn` (a state dict holding the CMVN buffers, or a `(mean, istd)` pair) the CMVN is
    applied too: what the encoder sees, and what this project's feature extractor returns.
    """
    wave = torch.as_tensor(waveform, dtype=torch.float32)
    wave = wave[None] if wave.dim() == 1 else wave
    if sample_rate != SAMPLE_RATE:
        wave = torchaudio.transforms.Resample(orig_freq=sample_rate, new_freq=SAMPLE_RATE)(wave)
    features = kaldi.fbank(
        wave * (1 << 15),
        num_mel_bins=num_mel_bins,
        frame_length=25,
        frame_shift=10,
        dither=0.0,
        energy_floor=0.0,
        sample_frequency=SAMPLE_RATE,
    )
    if cmvn is None:
        return features
    mean, istd = (cmvn[CMVN_MEAN], cmvn[CMVN_ISTD]) if isinstance(cmvn, Mapping) else cmvn
    return (features - mean) * istd
