"""The headline promise as a property: random edit scripts on a jobs file (insert, delete, move,
edit, duplicate, re-add, shuffle), each version run with `kill -9` at random moments and rerun
until it is done. Afterwards, for every script:

- creates == the number of distinct jobs that were ever in the file (per content, the most
  copies it ever had at once), counted by the simulator;
- no manifest row names another job's task, every file's sha256 is its own task's video, no
  `.part` (nor any unrecorded file) is left (`World.check`).

One simulator, in this process, outlives every killed client. It loses 10 % of create answers
(the create happened, the answer did not arrive) and slows half the video transfers, so kills
land between intent and answer and mid-transfer too. The default run is small; the
`exhaustive` marker (`pytest -m exhaustive`, or KLING_EXHAUSTIVE=1) runs 30 scripts of 6
versions (KLING_EXHAUSTIVE_SCRIPTS=N for more) and prints the numbers.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from batch_helpers import CLI, SimThread
from ownership_helpers import FAST, World, line

from kling_async.simulator import FaultConfig

SIM = {
    "concurrency": 6,
    "gen_seconds": 0.25,
    "video_bytes": 200_000,
    "faults": FaultConfig(rates={"create": {"lost": 0.1}, "video": {"latency:0.1": 0.5}}),
}


@dataclass
class Script:
    """One random edit script and what happened while it ran."""

    seed: int
    versions: int
    lines: list[str] = field(default_factory=list)
    most: Counter[str] = field(default_factory=Counter)  # line text → most copies at once
    removed: list[str] = field(default_factory=list)
    made: int = 0
    runs: int = 0
    kills: int = 0  # processes killed while they were still running

    def new_line(self, rng: random.Random) -> str:
        self.made += 1
        prompt = f"s{self.seed} job {self.made}"
        extra: dict[str, object] = {}
        if rng.random() < 0.25:  # the user's own id (one per content, as a user would)
            extra["external_task_id"] = f"s{self.seed}-own-{self.made}"
        if rng.random() < 0.2:
            extra["watermark"] = True
        return line(prompt, **extra)

    def edit(self, rng: random.Random) -> None:
        """One to three random edits of the jobs file."""
        for _ in range(rng.randint(1, 3)):
            lines = self.lines
            op = rng.choice(["insert", "delete", "move", "edit", "duplicate", "readd", "shuffle"])
            at = rng.randint(0, len(lines))
            if op == "insert" or not lines:
                lines.insert(at, self.new_line(rng))
            elif op == "delete":
                self.removed.append(lines.pop(rng.randrange(len(lines))))
            elif op == "move":
                lines.insert(at, lines.pop(rng.randrange(len(lines))))
            elif op == "edit":
                index = rng.randrange(len(lines))
                self.removed.append(lines[index])
                lines[index] = self.new_line(rng)
            elif op == "duplicate":  # a line with its own id cannot be two tasks (1201)
                plain = [text for text in lines if "external_task_id" not in text]
                lines.insert(at, rng.choice(plain or [self.new_line(rng)]))
            elif op == "readd" and self.removed:
                lines.insert(at, self.removed.pop(rng.randrange(len(self.removed))))
            else:
                rng.shuffle(lines)

    def note_version(self) -> None:
        for text, copies in Counter(self.lines).items():
            self.most[text] = max(self.most[text], copies)


def run_script(st: SimThread, root: Path, seed: int, versions: int) -> Script:
    rng = random.Random(seed)
    script = Script(seed, versions)
    world = World(st, root / f"script-{seed}")
    world.root.mkdir()
    script.lines = [script.new_line(rng) for _ in range(rng.randint(3, 6))]
    for version in range(versions):
        if version:
            script.edit(rng)
        script.note_version()
        world.write(script.lines)
        cmd = [*CLI, "run", str(world.jobs), "--out", str(world.out), *FAST]
        for attempt in range(8):
            script.runs += 1
            proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=world.env
            )
            if attempt < 2 and rng.random() < 0.7:  # kill -9 at a random moment of the run
                time.sleep(rng.uniform(0.2, 2.0))
                if proc.poll() is None:
                    script.kills += 1
                proc.kill()
            _, err = proc.communicate(timeout=60)
            assert "Traceback" not in err, err
            if proc.returncode == 0:
                break
            assert proc.returncode == -9, (seed, version, proc.returncode, err[-2000:])
        else:
            raise AssertionError(f"script {seed} version {version} never finished")
        world.check()
        by_prompt = world.stats()["creates_by_prompt"]
        prefix = f"s{seed} "
        made = {p: n for p, n in by_prompt.items() if p.startswith(prefix)}
        expected: Counter[str] = Counter()
        for text, copies in script.most.items():
            expected[json_prompt(text)] += copies
        assert made == dict(expected), (seed, version, made, dict(expected))
    return script


def json_prompt(text: str) -> str:
    return str(json.loads(text)["prompt"])


def run_property(tmp_path: Path, scripts: int, versions: int) -> tuple[list[Script], int]:
    with SimThread(**SIM) as st:
        with ThreadPoolExecutor(max_workers=3) as pool:
            done = list(pool.map(lambda s: run_script(st, tmp_path, s, versions), range(scripts)))
        creates = st.stats()["accepted_creates"]
    distinct = sum(sum(s.most.values()) for s in done)
    assert creates == distinct, (creates, distinct)
    return done, creates


def report(done: list[Script], creates: int, started: float) -> str:
    kills = sum(s.kills for s in done)
    runs = sum(s.runs for s in done)
    return (
        f"{len(done)} scripts, {sum(s.versions for s in done)} versions, {runs} runs, "
        f"{kills} kill -9 mid-run; creates {creates} = distinct jobs ever "
        f"{sum(sum(s.most.values()) for s in done)}; {time.monotonic() - started:.0f} s"
    )


@pytest.mark.slow
def test_random_edits_and_kills_never_pay_twice(tmp_path: Path) -> None:
    started = time.monotonic()
    done, creates = run_property(tmp_path, scripts=3, versions=3)
    assert sum(s.kills for s in done) >= 1  # the property was exercised under kills
    print("\n" + report(done, creates, started))


@pytest.mark.exhaustive
def test_random_edits_and_kills_exhaustive(tmp_path: Path) -> None:
    started = time.monotonic()
    scripts = int(os.environ.get("KLING_EXHAUSTIVE_SCRIPTS", "30"))
    done, creates = run_property(tmp_path, scripts=scripts, versions=6)
    print("\n" + report(done, creates, started))
