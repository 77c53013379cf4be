"""Decode and re-encode a Task with 5 commands; compare with plain json.loads + json.dumps.

Run by hand: ``python benchmarks/codec.py``. Prints documents per second for both and the ratio
(codec time / plain json time), measured in the same run. Target: at most 3x.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from flamenco_protocol import Command, ObjectId, Task, TaskStatus, codec


def sample_task() -> bytes:
    """A Task as the manager sends it for a Blender render: 5 commands, one parent."""
    commands = (
        Command(name="move_out_of_way", settings={"src": "/render/shot/frames"}),
        Command(
            name="blender_render",
            settings={
                "blender_cmd": "/opt/blender/blender --factory-startup",
                "filepath": "/shared/projects/shot_010/shot_010.blend",
                "format": "OPEN_EXR",
                "frames": "1..10",
                "render_output": "/render/shot/frames/######",
            },
        ),
        Command(name="exr_sequence_to_jpeg", settings={"exr_glob": "/render/shot/*.exr"}),
        Command(
            name="create_video",
            settings={"ffmpeg_cmd": "ffmpeg", "input_files": "/render/*.jpg", "fps": 24},
        ),
        Command(name="move_to_final", settings={"src": "/render/a", "dest": "/render/b"}),
    )
    task = Task(
        id=ObjectId.new(),
        job=ObjectId.new(),
        manager=ObjectId.new(),
        project=ObjectId.new(),
        user=ObjectId.new(),
        name="blender-render-1-10",
        status=TaskStatus.ACTIVE,
        priority=50,
        job_priority=50,
        job_type="blender-render",
        task_type="blender-render",
        commands=commands,
        parents=(ObjectId.new(),),
        worker="render-07",
    )
    return codec.dumps(task)


def per_second(function: Callable[[], object], seconds: float = 1.0, repeats: int = 5) -> float:
    """The median rate of ``function`` over ``repeats`` runs of about ``seconds`` each."""
    rates = []
    for _ in range(repeats):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            for _ in range(100):
                function()
            count += 100
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    """Measure both and print the ratio."""
    raw = sample_task()
    assert codec.dumps(codec.loads(Task, raw)) == raw

    def plain() -> bytes:
        return json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":")).encode()

    def ours() -> bytes:
        return codec.dumps(codec.loads(Task, raw))

    plain_rate = per_second(plain)
    codec_rate = per_second(ours)
    print(f"document: Task with 5 commands, {len(raw)} bytes of JSON")
    print(f"plain json.loads + json.dumps: {plain_rate:,.0f} documents/s")
    print(f"codec loads + dumps:           {codec_rate:,.0f} documents/s")
    print(f"ratio (codec cost / plain json cost): {plain_rate / codec_rate:.2f}x (target <= 3x)")


if __name__ == "__main__":
    main()
