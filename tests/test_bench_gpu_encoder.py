"""``bench/gpu_encoder.py`` stays correct without a GPU: its dry run drives the capture protocol on CPU.

The dry run uses the same frames buffers, zero padding and per-video slicing as the CUDA-graph replay
(only the capture is skipped), and compares with the eager ``get_video_features``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from llava_next_video_hf import testing

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_encoder.py"


def test_dry_run_replays_the_encoder_protocol_and_matches_eager(tmp_path):
    out = tmp_path / "gpu_encoder.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", "tiny", "--buckets", "1,4", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["meta"]["dry_run"] is True
    config = testing.tiny_config()
    rows = {row["bucket_frames"]: row for row in result["rows"]}
    assert sorted(rows) == [1, 4]
    # bucket 4 holds two videos of 2 + 1 frames and one zero-padded frame that must not leak out
    assert rows[4]["real_frames"] == 3 and rows[4]["videos"] == 2
    assert rows[4]["tokens"] == config.num_video_tokens(2) + config.num_video_tokens(1)
    assert rows[1]["tokens"] == config.num_video_tokens(1)
    for row in rows.values():
        assert row["max_abs_diff"] < 1e-5, row
        assert row["captured"] is False
