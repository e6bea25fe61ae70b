"""Runs transformers' own common model and config tests against VITA (slow: about three minutes on two CPU cores).

transformers' test mixins are not in its wheel; its source distribution on PyPI has `tests/test_modeling_common.py`
and `tests/test_configuration_common.py`, but not the modules they import from subfolders
(`tests/generation/test_utils.py`, `tests/exporters/test_export.py`, `tests/utils/test_configuration_utils.py`).
`transformers_test_package` downloads the sdist of the installed version once (`pip download`, cached in pytest's
cache folder, which git ignores), unpacks its tests as the package `transformers_tests` and writes a stand-in for each
missing module, marked `vita_stand_in`: a `GenerationTesterMixin` and an `ExportTesterMixin` without tests, and an
empty `config_common_kwargs` (used only by the config check that composite configs such as VITA's skip).
`transformers_common_vita.py` holds the VITA tester; it runs through pytest in a subprocess, so transformers' test
package and this project's `tests` package never meet in one interpreter.
"""

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import transformers

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).with_name("transformers_common_vita.py")
STAND_INS = {
    "generation/test_utils.py": (
        "class GenerationTesterMixin:\n"
        '    """Stand-in: the transformers sdist ships no tests/generation/test_utils.py."""\n\n'
        "    vita_stand_in = True\n"
    ),
    "exporters/test_export.py": (
        "class ExportTesterMixin:\n"
        '    """Stand-in: the transformers sdist ships no tests/exporters/test_export.py."""\n\n'
        "    vita_stand_in = True\n"
    ),
    "utils/test_configuration_utils.py": (
        "# Stand-in: the transformers sdist ships no tests/utils/test_configuration_utils.py.\n"
        "config_common_kwargs = {}\n"
        "vita_stand_in = True\n"
    ),
}


def transformers_test_package(cache_dir: Path, version: str = transformers.__version__) -> Path:
    """`cache_dir/<version>/` holding the package `transformers_tests` (the sdist's tests plus stand-ins)."""
    root = cache_dir / version
    package = root / "transformers_tests"
    if (package / "test_modeling_common.py").is_file():
        return root
    download = root / "sdist"
    archive = download / f"transformers-{version}.tar.gz"
    if not archive.is_file():
        logger.info("downloading the transformers %s sdist into %s", version, download)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            + ["--quiet", f"transformers=={version}", "-d", str(download)],
            check=True,
            timeout=900,
        )
    staging = root / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    prefix = f"transformers-{version}/tests/"
    with tarfile.open(archive) as tar:
        members = [member for member in tar.getmembers() if member.name.startswith(prefix) and member.isfile()]
        for member in members:
            member.name = member.name[len(prefix) :]
        tar.extractall(staging, members=members, filter="data")
    for relative, text in STAND_INS.items():
        path = staging / relative
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for folder in [staging, *(path for path in staging.rglob("*") if path.is_dir())]:
        (folder / "__init__.py").touch()
    ini = "[pytest]\naddopts = -p no:cacheprovider\nfilterwarnings =\n    ignore::DeprecationWarning\n"
    (root / "pytest.ini").write_text(ini + "    ignore::pytest.PytestUnknownMarkWarning\n", encoding="utf-8")
    shutil.rmtree(package, ignore_errors=True)
    staging.rename(package)
    return root


def junit_counts(report: Path) -> dict[str, int]:
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


@pytest.mark.slow
def test_transformers_common_model_and_config_tests_pass(request, tmp_path):
    pytest.importorskip("parameterized", reason="transformers' test mixins need `pip install parameterized`")
    root = transformers_test_package(Path(request.config.cache.mkdir("transformers-sdist-tests")))
    report = tmp_path / "report.xml"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), str(REPO_ROOT)]),
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    command = [sys.executable, "-m", "pytest", str(CASES), "-c", str(root / "pytest.ini"), "--rootdir", str(root)]
    command += ["-q", "-rfEs", f"--junitxml={report}"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3000)
    print(result.stdout[-20000:])
    counts = junit_counts(report)
    print("transformers common tests against VITA:", counts)
    assert counts["failures"] == 0 and counts["errors"] == 0, result.stdout[-8000:]
    assert counts["passed"] > 100, counts
