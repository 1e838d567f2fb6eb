"""``pipelines.simulator.stream_job``: a process group's memory and CPU, as the stream benches read them."""
import subprocess
import sys
import time

import pytest

from pipelines.simulator.stream_job import group_cpu_seconds, group_rss_mb


@pytest.mark.timeout(30)
def test_a_group_s_cpu_and_memory_are_its_processes():
    burn = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", burn], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while group_cpu_seconds(proc.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu = group_cpu_seconds(proc.pid)
        assert 0.5 <= cpu < 5.0  # its 0.6 s of work, not this test process's
        assert group_rss_mb(proc.pid) > 1.0
    finally:
        proc.kill()
        proc.wait()
    assert group_cpu_seconds(proc.pid) == 0.0  # nothing of the group left
