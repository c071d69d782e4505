"""Python warnings never reach stderr raw: the model's own become notes, torch's are dropped."""

import subprocess
import sys
import textwrap


def test_a_models_warning_is_a_note_and_stderr_stays_empty(tmp_path):
    path = tmp_path / "warns.py"
    path.write_text(textwrap.dedent("""
        import warnings
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)
                warnings.warn("a deprecated knob")

            def forward(self, x):
                return self.fc(x)
    """))
    proc = subprocess.run([sys.executable, "-m", "initcheck", f"{path}:Net"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "note: warning at" in proc.stdout and "a deprecated knob" in proc.stdout


def test_torchs_own_import_warnings_stay_off_stderr(tmp_path):
    """Without NumPy, importing torch warns "Failed to initialize NumPy" (on a bare install, the
    README's first command): whatever imports torch first (the rule registry while the options are
    checked, the loader, the tracer), initcheck's stderr stays its own."""
    path = tmp_path / "net.py"
    path.write_text("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                    "        self.fc = nn.Linear(4, 2)\n    def forward(self, x):\n        return self.fc(x)\n")
    code = ("import sys; sys.modules['numpy'] = None  # as if NumPy were not installed\n"
            "from initcheck.cli import main; main(prog_name='initcheck')")
    for args in ([f"{path}:Net"], ["--list-rules"], [f"{path}:Net", "--select", "IC101"]):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", args
