"""The CLI's light paths start without the heavy libraries: ``tgif --help``, ``tgif datasets``, ``tgif metrics``
and ``tgif fuse`` with a classic method import neither torch nor ultralytics nor transformers (each checked in a
fresh interpreter, through ``sys.modules``); the commands that need them still import them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
IR, VI = EXAMPLES / "ivf" / "ir.png", EXAMPLES / "ivf" / "vi.png"
HEAVY = ("torch", "ultralytics", "transformers")

#: Runs ``tgif ARGV`` in this interpreter and prints, last, which heavy modules it imported (the repository root
#: first on sys.path: the checkout under test, not an installed copy).
PROBE = """
import json, sys
sys.path.insert(0, {root!r})
from tgif.cli import main
try:
    status = main({argv!r})
except SystemExit as exc:  # --help
    status = exc.code
print(json.dumps({{"status": status, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def _run(argv: list[str], tmp_path: Path) -> dict:
    code = PROBE.format(root=str(ROOT), argv=argv, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TGIF_SHARED": str(tmp_path / "shared")})
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "out": done.stdout}


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["fuse", "--help"],
    ["fuse", str(IR), str(VI), "-o", "{tmp}/fused.png", "--method", "average", "--metrics"],
    ["fuse", str(IR), str(VI), "-o", "{tmp}/fused.png", "--method", "max"],
    ["fuse", str(IR), str(VI), "-o", "{tmp}/fused.png", "--method", "laplacian"],
    ["metrics", str(VI), str(IR), str(VI), "--json"],
    ["datasets"],
], ids=["help", "fuse-help", "average", "max", "laplacian", "metrics", "datasets"])
def test_light_commands_import_no_torch_ultralytics_or_transformers(argv, tmp_path):
    for folder, source in (("ir", IR), ("vi", VI)):  # a one-pair dataset for `tgif datasets`
        (tmp_path / "shared" / "data" / "msrs_test" / folder).mkdir(parents=True)
        shutil.copy(source, tmp_path / "shared" / "data" / "msrs_test" / folder / "0001.png")
    result = _run([part.replace("{tmp}", str(tmp_path)) for part in argv], tmp_path)
    assert result["status"] == 0, result["out"]
    assert result["heavy"] == [], f"tgif {' '.join(argv)} imported {result['heavy']}"
    if argv[0] == "fuse" and "--help" not in argv:
        method = argv[argv.index("--method") + 1]
        assert (tmp_path / "fused.png").is_file() and f"method {method})" in result["out"]
    if argv == ["datasets"]:
        assert "msrs_test" in result["out"] and "1 pairs" in result["out"]


def test_the_network_command_still_imports_torch(tmp_path):
    """The probe sees imports: ``tgif fuse`` with the TGIF network does load torch."""
    result = _run(["fuse", str(IR), str(VI), "-o", str(tmp_path / "fused.png"), "--captioner", "template",
                   "--caption1", "a person", "--caption2", "a street"], tmp_path)
    assert result["status"] == 0, result["out"]
    assert "torch" in result["heavy"]


def test_cli_choice_names_match_the_implementations():
    from tgif.baselines import BASELINES
    from tgif.captions import CAPTION_MODES
    from tgif.io.pair import TASKS
    from tgif.names import BASELINE_NAMES
    from tgif.tasks import TASK_SPECS

    assert tuple(BASELINES) == BASELINE_NAMES
    assert CAPTION_MODES[0] == "full" and len(set(CAPTION_MODES)) == 5
    assert set(TASKS) == {spec.task for spec in TASK_SPECS.values()}
