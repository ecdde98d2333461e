"""The command line's exit shortcut (issue 22): only a real process end skips the final collection."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest


def test_in_process_calls_keep_objects_collectable():
    from litomo.cli import main

    before = gc.get_freeze_count()
    with pytest.raises(SystemExit) as exc:
        main(["version"])
    assert exc.value.code == 0
    assert gc.get_freeze_count() == before  # tests and library callers are not frozen


def test_command_line_call_freezes_before_exit_and_keeps_its_exit_codes(tmp_path):
    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
            "sys.argv = ['litomo'] + sys.argv[1:]\n"
            "from litomo.cli import main\n"
            "main()\n")
    ok = subprocess.run([sys.executable, "-c", code, "version"], capture_output=True, text=True, timeout=120,
                        cwd=tmp_path)
    assert ok.returncode == 0 and "frozen True" in ok.stdout
    bad = subprocess.run([sys.executable, "-c", code, "run", "/nonexistent/experiment.toml", "--out", "x"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "litomo: error:" in bad.stderr
