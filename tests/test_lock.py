"""The exclusive job lock: refused while held, free after exit, stale records taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pcapvision.errors import LockedError
from pcapvision.lock import exclusive_lock, pid_alive


def test_second_holder_is_refused_with_the_first_holders_pid(tmp_path):
    path = tmp_path / "reg" / ".lock"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pcapvision.lock import exclusive_lock
        with exclusive_lock({str(path)!r}, what="retrain"):
            print("held", flush=True)
            sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"another retrain is running \(pid {child.pid} "):
            with exclusive_lock(path, what="retrain"):
                pass
    finally:
        child.communicate("")
    # released on exit: the next holder gets it, and nothing stale is reported
    with exclusive_lock(path) as holder:
        assert holder["pid"] == os.getpid()
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert path.read_text() == ""


def test_lock_of_a_killed_process_is_taken_over_and_reported(tmp_path, caplog):
    path = tmp_path / ".lock"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pcapvision.lock import exclusive_lock
        with exclusive_lock({str(path)!r}, what="retrain"):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    child.kill()
    child.wait()
    assert not pid_alive(child.pid)
    with caplog.at_level("WARNING", logger="pcapvision.lock"):
        with exclusive_lock(path) as holder:
            assert holder["pid"] == os.getpid()
    assert f"stale lock of retrain pid {child.pid}" in caplog.text
    assert "whose process is gone" in caplog.text


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    path = tmp_path / ".lock"
    with pytest.raises(RuntimeError):
        with exclusive_lock(path):
            raise RuntimeError("boom")
    with exclusive_lock(path):
        pass
