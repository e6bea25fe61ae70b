"""Behaviour of VitaModel / VitaForConditionalGeneration on tiny configs (transformers' ModelTester pattern)."""

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

from modeling_vita import VitaForConditionalGeneration, VitaModel
from modeling_vita.modeling_vita import pixel_shuffle
from modeling_vita.testing_utils import TINY_TOKEN_IDS, tiny_vita_config
from tests.modeling_vita.inputs import build_inputs, select_sample

# Text ids of the tiny vocabulary used as ordinary words.
WORDS = list(range(20, 40))
MIXED_BATCH = [
    [1, 20, ("image", 2), 21, 22],
    [1, 23, ("audio", 198), 24],
    [1, 25, ("video", 4), 26, ("audio", 150), 27, 28, 29],
    [1, 30, 31, 32],
]


def tiny_model(**overrides) -> VitaForConditionalGeneration:
    return VitaForConditionalGeneration(tiny_vita_config(**overrides)).eval()


def test_tiny_config_is_small():
    model = tiny_model()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert model.config.image_seq_length == 4


def test_forward_mixes_image_video_audio_and_text_in_one_batch():
    model = tiny_model()
    inputs = build_inputs(model.config, MIXED_BATCH)
    out = model(**inputs)
    assert out.logits.shape == (*inputs["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(out.logits).all()
    # Every tower's output is carried: 2 + 0 tiles, 4 frames, 2 clips of 24 and 18 tokens.
    assert out.image_outputs.pooler_output.shape == (2, 4, 64)
    assert out.video_outputs.pooler_output.shape == (4, 4, 64)
    assert out.audio_outputs.pooler_output.shape == (24 + 18, 64)
    assert out.audio_outputs.attention_mask.sum(-1).tolist() == [24, 18]


def test_each_sample_in_a_mixed_batch_matches_its_forward_alone():
    model = tiny_model()
    batch = build_inputs(model.config, MIXED_BATCH, torch.Generator().manual_seed(3))
    logits = model(**batch).logits
    for index in range(len(MIXED_BATCH)):
        alone = select_sample(model.config, MIXED_BATCH, index, generator_seed=3)
        expected = model(**alone).logits[0]
        got = logits[index][batch["attention_mask"][index].bool()]
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_loss_with_labels_is_next_token_cross_entropy_and_ignores_minus_100():
    model = tiny_model()
    inputs = build_inputs(model.config, MIXED_BATCH[:2])
    labels = inputs["input_ids"].clone()
    labels[inputs["attention_mask"] == 0] = -100
    out = model(**inputs, labels=labels)
    shifted = labels[:, 1:]
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), shifted.reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected)


def test_router_logits_add_the_mixtral_aux_loss():
    model = tiny_model()
    inputs = build_inputs(model.config, MIXED_BATCH[:2])
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    plain = model(**inputs, labels=labels, output_router_logits=False)
    with_aux = model(**inputs, labels=labels, output_router_logits=True)
    assert len(with_aux.router_logits) == model.config.text_config.num_hidden_layers
    coef = model.config.text_config.router_aux_loss_coef
    torch.testing.assert_close(with_aux.loss, plain.loss + coef * with_aux.aux_loss)


def test_generate_with_cache_equals_generate_without_cache():
    model = tiny_model()
    inputs = build_inputs(model.config, [MIXED_BATCH[2]])
    with_cache = model.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=True)
    without_cache = model.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without_cache)


def test_media_are_encoded_only_on_the_first_generation_step():
    model = tiny_model()
    inputs = build_inputs(model.config, [MIXED_BATCH[0]])
    calls = []
    handle = model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    model.generate(**inputs, max_new_tokens=5, do_sample=False)
    handle.remove()
    assert len(calls) == 1


def test_left_padded_batched_generation_equals_one_by_one():
    model = tiny_model()
    batch = build_inputs(model.config, MIXED_BATCH, torch.Generator().manual_seed(5))
    new_tokens = 6
    batched = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens)
    for index in range(len(MIXED_BATCH)):
        alone = select_sample(model.config, MIXED_BATCH, index, generator_seed=5)
        single = model.generate(**alone, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens)
        assert batched[index, -new_tokens:].tolist() == single[0, -new_tokens:].tolist()


@pytest.mark.parametrize(
    "modality, part", [("image", ("image", 1)), ("video", ("video", 2)), ("audio", ("audio", 100))]
)
def test_placeholder_and_feature_count_mismatch_raises_value_error(modality, part):
    model = tiny_model()
    inputs = build_inputs(model.config, [[1, 20, part, 21]])
    token_id = getattr(model.config, f"{modality}_token_id")
    ids = inputs["input_ids"]
    first = int((ids[0] == token_id).nonzero()[0])
    ids[0, first] = 22  # one placeholder fewer than features
    with pytest.raises(ValueError, match=rf"{modality} tokens do not match, tokens: \d+, features: \d+"):
        model(**inputs)


def test_placeholder_ids_without_media_are_embedded_as_ordinary_tokens():
    # As Llava and InternVL do (transformers' common tests feed random ids that hit them).
    model = tiny_model()
    ids = torch.tensor([[1, TINY_TOKEN_IDS["image"], TINY_TOKEN_IDS["audio"], TINY_TOKEN_IDS["video"], 20]])
    out = model(input_ids=ids)
    expected = model.model.language_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(out.logits, model.lm_head(expected))


def test_inputs_embeds_path_finds_placeholders_by_embedding():
    model = tiny_model()
    inputs = build_inputs(model.config, [MIXED_BATCH[0]])
    by_ids = model(**inputs).logits
    embeds = model.get_input_embeddings()(inputs.pop("input_ids"))
    by_embeds = model(inputs_embeds=embeds, **inputs).logits
    torch.testing.assert_close(by_ids, by_embeds)


def test_gradient_checkpointing_backward_reaches_every_tower():
    model = tiny_model()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    inputs = build_inputs(model.config, MIXED_BATCH[:3])
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    model(**inputs, labels=labels).loss.backward()
    for name in ("vision_tower", "multi_modal_projector", "audio_tower", "language_model"):
        grads = [p.grad for p in getattr(model.model, name).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


@pytest.mark.parametrize("text_model_type", ["qwen2", "llama"])
def test_other_decoder_backbones_work(text_model_type):
    model = tiny_model(text_model_type=text_model_type)
    assert model.model.language_model.config.model_type == text_model_type
    inputs = build_inputs(model.config, [MIXED_BATCH[0], MIXED_BATCH[1]])
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_resize_token_embeddings_adds_rows_and_keeps_working():
    model = tiny_model()
    old = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(1100)
    assert model.get_input_embeddings().weight.shape[0] == 1100
    assert model.get_output_embeddings().weight.shape[0] == 1100
    assert model.config.text_config.vocab_size == 1100
    torch.testing.assert_close(model.get_input_embeddings().weight[:1024], old)
    inputs = build_inputs(model.config, [[1, 1099, ("image", 1), 1050]])
    assert model(**inputs).logits.shape[-1] == 1100


def test_output_attentions_and_hidden_states_cover_every_tower():
    model = tiny_model()
    model.set_attn_implementation("eager")
    inputs = build_inputs(model.config, [[1, 20, ("image", 1), ("audio", 120), 21]])
    out = model(**inputs, output_attentions=True, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.text_config.num_hidden_layers + 1
    assert len(out.attentions) == model.config.text_config.num_hidden_layers
    assert len(out.image_outputs.attentions) == model.config.vision_config.num_hidden_layers
    assert len(out.audio_outputs.attentions) == model.config.audio_config.num_hidden_layers
    assert len(out.audio_outputs.hidden_states) == model.config.audio_config.num_hidden_layers + 1


def test_pixel_shuffle_concatenates_each_2x2_block_top_left_first():
    features = torch.randn(1, 4, 4, 3)
    shuffled = pixel_shuffle(features, 0.5).view(1, 2, 2, 12)
    for a in range(2):
        for b in range(2):
            expected = torch.cat([features[0, 2 * a + dy, 2 * b + dx] for dy in (0, 1) for dx in (0, 1)])
            torch.testing.assert_close(shuffled[0, a, b], expected)


def test_image_features_apply_scale_and_shuffle_to_last_layer_without_cls():
    model = tiny_model()
    pixel_values = torch.randn(2, 3, 56, 56)
    last = model.model.vision_tower(pixel_values=pixel_values).last_hidden_state[:, 1:]
    expected = model.model.multi_modal_projector(pixel_shuffle(last.reshape(2, 4, 4, -1) * 0.5, 0.5))
    torch.testing.assert_close(model.get_image_features(pixel_values).pooler_output, expected)


@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText])
def test_auto_classes_give_the_generation_model(auto_class):
    model = auto_class.from_config(tiny_vita_config())
    assert type(model) is VitaForConditionalGeneration
    assert isinstance(model.model, VitaModel)


def test_sdpa_and_eager_attention_agree():
    model = tiny_model()
    inputs = build_inputs(model.config, MIXED_BATCH)
    sdpa = model(**inputs).logits
    model.set_attn_implementation("eager")
    eager = model(**inputs).logits
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(sdpa[mask], eager[mask], atol=1e-4, rtol=1e-4)


def test_bfloat16_model_takes_float32_media():
    model = tiny_model().to(torch.bfloat16)
    inputs = build_inputs(model.config, MIXED_BATCH)
    out = model(**inputs)
    assert out.logits.dtype == torch.bfloat16
    assert torch.isfinite(out.logits.float()).all()


def test_device_map_auto_loads_and_generates(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    model = VitaForConditionalGeneration.from_pretrained(tmp_path, device_map="auto")
    inputs = build_inputs(model.config, [MIXED_BATCH[0]])
    assert model.generate(**inputs, max_new_tokens=2, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 2


def test_idle_towers_run_on_dummy_inputs_when_sharded_training_asks():
    model = tiny_model().train()
    inputs = build_inputs(model.config, [[1, 20, 21, 22, 23]])
    labels = inputs["input_ids"].clone()
    torch.manual_seed(1)
    plain = model(**inputs, labels=labels).loss
    model.model.run_idle_towers = True
    calls = []
    model.model.vision_tower.register_forward_hook(lambda *args: calls.append("vision"))
    model.model.audio_tower.register_forward_hook(lambda *args: calls.append("audio"))
    torch.manual_seed(1)
    loss = model(**inputs, labels=labels).loss
    assert sorted(calls) == ["audio", "vision"]
    torch.testing.assert_close(loss, plain)
    loss.backward()
    for tower in (model.model.vision_tower, model.model.audio_tower, model.model.multi_modal_projector):
        assert all(p.grad is not None for p in tower.parameters())
    model.eval()
    calls.clear()
    model(**inputs)
    assert calls == []  # never at inference


@pytest.mark.parametrize("getter", ["get_image_features", "get_video_features", "get_audio_features"])
def test_feature_getters_return_the_tower_output_and_honour_return_dict_once(getter):
    model = tiny_model()
    model.set_attn_implementation("eager")
    media = torch.randn(2, 120, 80) if getter == "get_audio_features" else torch.randn(2, 3, 56, 56)
    tower_config = model.config.audio_config if getter == "get_audio_features" else model.config.vision_config
    out = getattr(model, getter)(media, return_dict=True, output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape[0] == 2 and out.last_hidden_state.shape[-1] == tower_config.hidden_size
    assert len(out.hidden_states) == tower_config.num_hidden_layers + 1
    assert len(out.attentions) == tower_config.num_hidden_layers
    as_tuple = getattr(model, getter)(media, return_dict=False)
    assert isinstance(as_tuple, tuple)  # ModelOutput.to_tuple: the fields that are set, pooler_output among them
    tensors = [item for item in as_tuple if isinstance(item, torch.Tensor)]
    assert any(item.shape == out.pooler_output.shape and torch.allclose(item, out.pooler_output) for item in tensors)
    model.config.return_dict = False
    assert isinstance(getattr(model, getter)(media), tuple)


def test_pooler_outputs_are_the_features_the_llm_receives():
    model = tiny_model()
    inputs = build_inputs(model.config, MIXED_BATCH[:3])
    out = model.model(**inputs)
    audio = model.get_audio_features(inputs["input_features"], inputs["input_features_mask"])
    assert audio.pooler_output.shape == (int((inputs["input_ids"] == TINY_TOKEN_IDS["audio"]).sum()), 64)
    torch.testing.assert_close(audio.pooler_output, out.audio_outputs.pooler_output)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    for modality, pixels in (("image", "pixel_values"), ("video", "pixel_values_videos")):
        features = getattr(model, f"get_{modality}_features")(inputs[pixels]).pooler_output
        embeds[inputs["input_ids"] == TINY_TOKEN_IDS[modality]] = features.flatten(0, 1)
    embeds[inputs["input_ids"] == TINY_TOKEN_IDS["audio"]] = audio.pooler_output
    expected = model.model.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state)
