"""Starting a worker does not make multiprocessing run the node's __main__ again in it,
whether the node was started as a module (`python -m engine.cli`) or as a script (the
`recnode` console script)."""

import subprocess
import sys

from testkit.node import REPO

PROBE = """
from multiprocessing import spawn
from engine.supervisor import main_module_hidden

def main_keys():
    return sorted(k for k in spawn.get_preparation_data("worker") if k.startswith("init_main"))

before = main_keys()
with main_module_hidden():
    hidden = main_keys()
print(before, hidden, main_keys() == before)
"""


def test_a_script_main_is_hidden_and_restored(tmp_path):
    script = tmp_path / "recnode_like.py"
    script.write_text(PROBE)
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=True, env={"PYTHONPATH": str(REPO)})
    assert done.stdout.split() == ["['init_main_from_path']", "[]", "True"]


def test_a_module_main_is_hidden_and_restored(tmp_path):
    (tmp_path / "recnode_like.py").write_text(PROBE)
    done = subprocess.run([sys.executable, "-m", "recnode_like"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=True, env={"PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert done.stdout.split() == ["['init_main_from_name']", "[]", "True"]
