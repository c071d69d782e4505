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
