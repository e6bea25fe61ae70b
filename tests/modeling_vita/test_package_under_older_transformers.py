"""`modeling_vita` under a transformers older than its model classes need (5.24): vLLM 0.32's environment has 5.19.

The package must import there with its duplex runtime (what the vLLM backend, the CLI and the Space use) and say, for
each model class asked for, which transformers it needs and what to do; `tests/vllm/test_vllm_space.py` checks the
same under the real 5.19. Here a child process reports an older version before the import.
"""

import json
import subprocess
import sys

CHILD = """
import json, transformers
transformers.__version__ = "5.19.0"
import modeling_vita
from modeling_vita import DuplexSession, VADParams, make_tts
out = {"has": modeling_vita.HAS_MODEL_CLASSES, "all": modeling_vita.__all__}
try:
    modeling_vita.VitaForConditionalGeneration
except ImportError as error:
    out["error"] = str(error)
print(json.dumps(out))
"""


def test_older_transformers_imports_the_duplex_runtime_and_names_the_version_the_model_classes_need():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["has"] is False
    assert "DuplexSession" in report["all"] and "VitaForConditionalGeneration" not in report["all"]
    assert report["error"].startswith(
        "modeling_vita.VitaForConditionalGeneration needs transformers >= 5.24, found transformers 5.19.0."
    )
    assert "backend='vllm'" in report["error"] and "pip install 'transformers>=5.24'" in report["error"]


def test_current_transformers_has_every_model_class():
    import modeling_vita

    assert modeling_vita.HAS_MODEL_CLASSES
    assert set(modeling_vita.MODEL_NAMES) <= set(modeling_vita.__all__)
    assert all(hasattr(modeling_vita, name) for name in modeling_vita.MODEL_NAMES)
