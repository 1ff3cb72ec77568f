#!/usr/bin/env python3
"""CTest driver for scripts/plot_metrics.py: a generated metrics.jsonl (with a resumed, repeated step and a partial last
line) becomes a PNG. Exits 77 (skipped) with the reason when matplotlib is not installed."""
import json
import math
import pathlib
import subprocess
import sys
import tempfile

script = sys.argv[1]
try:
    import matplotlib  # noqa: F401
except ImportError:
    print("SKIP: matplotlib is not installed (scripts/setup.sh installs it)")
    sys.exit(77)

with tempfile.TemporaryDirectory() as tmp:
    metrics = pathlib.Path(tmp) / "run" / "metrics.jsonl"
    metrics.parent.mkdir()
    rows = [{"step": s, "loss": 5 * math.exp(-s / 40) + 1, "lr": 1e-3 * min(1, s / 10), "tokens": 1024 * s}
            for s in range(1, 101)]
    for r in rows:
        if r["step"] % 25 == 0:
            r["eval_loss"] = r["loss"] + 0.1
    rows += rows[60:70]  # a resume from step 60 repeats rows
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 101, "lo')
    out = pathlib.Path(tmp) / "curve.png"
    res = subprocess.run([sys.executable, script, str(metrics), "-o", str(out)], capture_output=True, text=True)
    print(res.stdout, res.stderr)
    assert res.returncode == 0, "plot_metrics.py failed"
    assert "partial last line" in res.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert len(data) > 10000, f"suspiciously small PNG ({len(data)} bytes)"

    bad = pathlib.Path(tmp) / "bad.jsonl"
    bad.write_text('{"step": 1, "loss": 2}\nnot json\n{"step": 2, "loss": 1}\n')
    res = subprocess.run([sys.executable, script, str(bad), "-o", str(out)], capture_output=True, text=True)
    assert res.returncode != 0 and "bad.jsonl:2" in res.stderr, res.stderr
print("ok")
