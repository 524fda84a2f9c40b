"""The README's Python quick start runs as shown, twice (the second time
from the cache)."""

import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def quick_start():
    text = open(README, encoding="utf-8").read()
    section = text.split("## Quick start in Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quick_start_runs(tmp_path):
    script = tmp_path / "quickstart.py"
    script.write_text(quick_start())
    env = dict(os.environ)
    env.pop("CELLFLOW_CACHE", None)
    runs = [subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                           text=True, timeout=240, env=env) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
        assert "(10, 256) float32" in r.stdout
        assert "16 blocks, 16 done" in r.stdout
    assert "64 cells computed" in runs[0].stdout
    assert "0 cells computed" in runs[1].stdout  # found in ./cellflow-cache
    assert (tmp_path / "cellflow-cache").is_dir()
