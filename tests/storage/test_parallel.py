"""process_map: spawned workers never run the parent's main script (a Streamlit page, in the server)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_spawned_workers_do_not_run_the_main_script(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "page.py"
    # a script that, like a Streamlit page, runs at import; the threads make process_map spawn
    script.write_text(
        textwrap.dedent(
            f"""
            import os, threading, time
            open({str(marker)!r}, "a").write(f"{{os.getpid()}}\\n")
            if __name__ == "__main__":
                from storage.parallel import process_map
                threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
                print(sum(process_map(abs, list(range(-100, 0)), workers=2)))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5050"
    assert len(marker.read_text().split()) == 1  # the script ran once: in the parent, never in a worker
