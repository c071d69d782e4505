import os
import signal
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))


def pytest_configure(config):
    """A test run started in the background by a non-interactive shell (`pytest &`, a CI step's
    job) inherits SIGINT ignored, and every child it starts inherits that too: the command then
    rightly ignores Ctrl-C (as under nohup) and the tests that press it hang. Children get the
    disposition a terminal gives (a Python handler is reset to the default by exec)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from seed 0, and leaves the global RNG and the rule registry as it found
    them (a test that registers a rule or draws numbers cannot leak into the next)."""
    from initcheck.findings import RULES, SETTINGS
    from initcheck.options import load_rules

    load_rules()  # every built-in rule registered before the snapshot, so none is lost at the restore
    rng = torch.random.get_rng_state()
    rules, settings = dict(RULES), dict(SETTINGS)
    torch.manual_seed(0)
    yield
    torch.random.set_rng_state(rng)
    RULES.clear()
    RULES.update(rules)
    SETTINGS.clear()
    SETTINGS.update(settings)
