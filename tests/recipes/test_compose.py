"""Composing a fresh VITA from separate checkpoints: the parts keep their weights, the rest is new and trainable."""

import torch
from transformers import InternVLVisionConfig, InternVLVisionModel, LlamaConfig, LlamaForCausalLM

from modeling_vita import VitaAudioEncoder, VitaAudioEncoderConfig
from modeling_vita.testing_utils import TINY_AUDIO_CONFIG, TINY_VISION_CONFIG, tiny_text_config
from processing_vita.testing_utils import tiny_vita_tokenizer
from recipes.compose import compose_vita
from recipes.data import write_smoke_data
from recipes.sft import main, parse_args
from tests.recipes import smoke_cli_args


def _save_parts(root):
    torch.manual_seed(0)
    text = tiny_text_config("llama")
    text.pop("model_type")
    language_model = LlamaForCausalLM(LlamaConfig(**{**text, "vocab_size": 800}))
    language_model.save_pretrained(root / "llm")
    tokenizer = tiny_vita_tokenizer()
    tokenizer.save_pretrained(root / "llm")
    vision = {k: v for k, v in TINY_VISION_CONFIG.items() if k != "model_type"}
    InternVLVisionModel(InternVLVisionConfig(**vision)).save_pretrained(root / "vision")
    # Saved for a 48-wide LLM: the adapter's last layer cannot serve the 64-wide Llama.
    VitaAudioEncoder(VitaAudioEncoderConfig(**TINY_AUDIO_CONFIG, output_size=48)).save_pretrained(root / "audio")
    return language_model, len(tokenizer)


def test_composed_model_keeps_every_pretrained_part(tmp_path):
    language_model, tokenizer_length = _save_parts(tmp_path)
    model, processor = compose_vita(str(tmp_path / "llm"), str(tmp_path / "vision"), str(tmp_path / "audio"))
    vision = InternVLVisionModel.from_pretrained(tmp_path / "vision")
    audio = VitaAudioEncoder.from_pretrained(tmp_path / "audio")
    assert model.config.text_config.model_type == "llama"
    # The LLM grows to the tokenizer (placeholders included); old rows are unchanged.
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == max(800, tokenizer_length)
    torch.testing.assert_close(embeddings[:800], language_model.get_input_embeddings().weight)
    for name, tensor in vision.state_dict().items():
        torch.testing.assert_close(model.model.vision_tower.state_dict()[name], tensor)
    for name, tensor in audio.state_dict().items():
        if not name.startswith("adapter.linear"):
            torch.testing.assert_close(model.model.audio_tower.state_dict()[name], tensor)
    assert model.model.audio_tower.adapter.linear.out_features == 64
    assert processor.image_token_id == model.config.image_token_id
    assert processor.image_seq_length == model.config.image_seq_length == 4
    inputs = processor(
        text=["<image>\\n<audio>hello"],
        images=[[torch.zeros(3, 80, 120)]],
        audio=[[torch.zeros(16000)]],
        sampling_rate=16000,
        return_tensors="pt",
    )
    out = model(**inputs)
    assert torch.isfinite(out.logits).all()


def test_sft_trains_the_projector_of_a_composed_model(tmp_path):
    _save_parts(tmp_path)
    dataset, media = write_smoke_data(tmp_path / "smoke")
    cli = smoke_cli_args(
        dataset,
        media,
        str(tmp_path / "out"),
        stage="vision_align",
        tiny_model="false",
        text_model_name_or_path=str(tmp_path / "llm"),
        vision_model_name_or_path=str(tmp_path / "vision"),
        audio_model_name_or_path=str(tmp_path / "audio"),
        max_steps=1,
        router_aux_loss_coef=0.0,  # a dense Llama has no router
        save_strategy="no",
    )
    trainer = main(*parse_args(cli))
    trained = {name.split(".")[1] for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained == {"multi_modal_projector"}
