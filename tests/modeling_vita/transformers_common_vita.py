"""VITA under transformers' own common model tests: a model tester in the layout of transformers' `tests/models/`.

Not collected by this project's pytest run (the name has no `test_` prefix): `test_transformers_common.py` prepares
transformers' test package from the installed version's source distribution as `transformers_tests` (with stand-ins
for the modules the sdist lacks) and runs this file through pytest in a subprocess. The tester follows InternVL's and
Qwen2-Audio's: a tiny config, a batch whose every sample holds one image tile, one video frame and one audio clip
between text tokens, and `ModelTesterMixin` + `ConfigTester` over `VitaModel` and `VitaForConditionalGeneration`.
"""

import logging
import unittest

import torch
from transformers.models.auto import modeling_auto
from transformers_tests.generation.test_utils import GenerationTesterMixin
from transformers_tests.test_configuration_common import ConfigTester
from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor

from modeling_vita import VitaConfig, VitaForConditionalGeneration, VitaModel
from modeling_vita.audio_encoder import get_audio_token_count
from modeling_vita.testing_utils import TINY_AUDIO_CONFIG, TINY_TOKEN_IDS, TINY_VISION_CONFIG, tiny_text_config

logger = logging.getLogger(__name__)

# The sdist of transformers ships no tests/generation/test_utils.py; `test_transformers_common.py` then writes a
# stand-in whose mixin carries this marker and no tests.
GENERATION_TESTS_ABSENT = getattr(GenerationTesterMixin, "vita_stand_in", False)
AUDIO_FRAMES = 31  # fbank frames of each clip: 4 audio tokens

# The common tests decide what each class is (a base model without loss, an LM head that gets labels, an image-text
# model whose image features must come one entry per image) from transformers' tables of model names. A model in the
# library is listed there; VITA registers its Auto classes at runtime, so it is listed here as the library would list
# it: `VitaModel` the base model, `VitaForConditionalGeneration` the head of every task it is registered for.
for _table, _class_name in (
    ("MODEL_MAPPING_NAMES", "VitaModel"),
    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "VitaForConditionalGeneration"),
    ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "VitaForConditionalGeneration"),
    ("MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES", "VitaForConditionalGeneration"),
):
    getattr(modeling_auto, _table).setdefault(VitaConfig.model_type, _class_name)


class VitaModelTester:
    """Builds the tiny config and the common inputs: `bos, text, <image> x4, text, <video> x4, <audio> x4, text`."""

    def __init__(self, parent: unittest.TestCase, batch_size: int = 7, text_model_type: str = "mixtral"):
        self.parent = parent
        self.batch_size = batch_size
        self.is_training = True
        # head_dim spelled out, as transformers' CausalLMModelTester does (RoPE helpers read it from the config).
        self.text_config = tiny_text_config(text_model_type, head_dim=16)
        self.vision_config = dict(TINY_VISION_CONFIG)
        self.audio_config = dict(TINY_AUDIO_CONFIG)
        self.vocab_size = self.text_config["vocab_size"]
        self.hidden_size = self.text_config["hidden_size"]
        self.num_hidden_layers = self.text_config["num_hidden_layers"]
        self.num_attention_heads = self.text_config["num_attention_heads"]
        self.image_size = self.vision_config["image_size"]
        self.image_seq_length = (self.image_size // self.vision_config["patch_size"]) ** 2 // 4
        self.audio_seq_length = get_audio_token_count(AUDIO_FRAMES)
        self.text_length = 6
        self.seq_length = self.text_length + 2 * self.image_seq_length + self.audio_seq_length
        self.pad_token_id = TINY_TOKEN_IDS["pad"]

    def get_config(self) -> VitaConfig:
        return VitaConfig(
            text_config=dict(self.text_config),
            vision_config=dict(self.vision_config),
            audio_config=dict(self.audio_config),
            image_token_id=TINY_TOKEN_IDS["image"],
            video_token_id=TINY_TOKEN_IDS["video"],
            audio_token_id=TINY_TOKEN_IDS["audio"],
            bos_token_id=TINY_TOKEN_IDS["bos"],
            eos_token_id=TINY_TOKEN_IDS["eos"],
            pad_token_id=TINY_TOKEN_IDS["pad"],
        )

    def prepare_config_and_inputs_for_common(self) -> tuple[VitaConfig, dict[str, torch.Tensor]]:
        config = self.get_config()
        # Ordinary words only: ids past the special tokens, so no random id is a placeholder or a state token.
        text = ids_tensor([self.batch_size, self.text_length], self.vocab_size - 16) + 16
        image = torch.full((self.batch_size, self.image_seq_length), config.image_token_id)
        video = torch.full((self.batch_size, self.image_seq_length), config.video_token_id)
        audio = torch.full((self.batch_size, self.audio_seq_length), config.audio_token_id)
        text[:, 0] = config.bos_token_id
        input_ids = torch.cat([text[:, :2], image, text[:, 2:4], video, audio, text[:, 4:]], dim=1)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": floats_tensor([self.batch_size, 3, self.image_size, self.image_size]),
            "pixel_values_videos": floats_tensor([self.batch_size, 3, self.image_size, self.image_size]),
            "input_features": floats_tensor([self.batch_size, AUDIO_FRAMES, self.audio_config["num_mel_bins"]]),
            "input_features_mask": torch.ones(self.batch_size, AUDIO_FRAMES, dtype=torch.long),
        }
        return config, inputs


class VitaModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    # The media go with input_ids where a test passes only the main input plus these (eager vs SDPA): the
    # placeholders in input_ids then have their media, and the comparison covers the towers too.
    additional_model_inputs = ["pixel_values", "pixel_values_videos", "input_features", "input_features_mask"]
    all_model_classes = (VitaModel, VitaForConditionalGeneration)
    all_generative_model_classes = (VitaForConditionalGeneration,)
    _is_composite = True

    def setUp(self) -> None:
        self.model_tester = VitaModelTester(self)
        self.config_tester = ConfigTester(self, config_class=VitaConfig, has_text_modality=False)

    def test_config(self) -> None:
        self.config_tester.run_common_tests()

    @unittest.skipIf(GENERATION_TESTS_ABSENT, "the transformers sdist has no tests/generation/test_utils.py")
    def test_generation_tester_mixin_inheritance(self) -> None:
        super().test_generation_tester_mixin_inheritance()
