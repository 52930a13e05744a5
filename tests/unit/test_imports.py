import importlib
import pkgutil
import subprocess
import sys

import tether


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages(tether.__path__, "tether.")]
    assert len(names) > 10
    for name in names:
        importlib.import_module(name)


def test_import_tether_and_cli_stay_cheap():
    code = "import sys, tether, tether.cli.main; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"
