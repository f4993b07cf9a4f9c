"""The records a batch job writes, and its summary (shared by the single-machine and Ray paths)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .inputs import Row


@dataclass
class Summary:
    """What a job did: rows answered, failed and skipped (already in the output), and the rate."""

    output: str
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def videos_per_s(self) -> float:
        """Rows finished (answered or failed) per second of this run."""
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line for people."""
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.errors.items()))
        state = "interrupted (re-run the same command to resume)" if self.interrupted else "finished"
        return (
            f"batch {state}: {self.done} done, {self.failed} failed{f' ({kinds})' if kinds else ''}, "
            f"{self.skipped} skipped (already in {self.output}); {self.videos_per_s:.2f} videos/s "
            f"over {self.seconds:.1f} s"
        )


def answer_record(row: Row, item: dict[str, Any], answer: str, reason: str, out_tokens: int, t: dict) -> dict:
    """The output line of an answered row."""
    return {
        "id": row.id,
        "video": row.video,
        "prompt": row.prompt,
        **row.extra,
        "answer": answer,
        "finish_reason": reason,
        "frames": item["frames"],
        "prompt_tokens": item["prompt_tokens"],
        "output_tokens": out_tokens,
        "seconds": {k: round(v, 4) for k, v in t.items()},
    }


def error_record(row: Row, error: dict[str, str], t: dict) -> dict:
    """The output line of a failed row: ``error`` {kind, message} instead of an answer."""
    return {
        "id": row.id,
        "video": row.video,
        "prompt": row.prompt,
        **row.extra,
        "error": error,
        "seconds": {k: round(v, 4) for k, v in t.items()},
    }


__all__ = ["Summary", "answer_record", "error_record"]
