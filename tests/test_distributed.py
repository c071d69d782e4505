"""DTensor / FSDP2: statistics from local shards, reduced with torch.distributed (2 gloo processes)."""

import os
import socket
import subprocess
import sys

import pytest
import torch.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_fsdp2_sharded_model_gets_the_numbers_of_its_unsharded_twin():
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        pytest.skip("FSDP2 (fully_shard) needs torch >= 2.6")
    out = subprocess.run([sys.executable, os.path.join(HERE, "dist_worker.py"), str(_free_port())],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.count("same report") == 2
