"""Helpers for the job-ownership tests: drive `kling-async` in subprocesses against a simulator
that lives in the test process, and check an output folder against what the simulator holds."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from batch_helpers import CLI, SimThread, clean_env, manifest

#: Fast settings for every `run` / `download` in these tests.
FAST = ["--concurrency", "4", "--poll-interval", "0.05", "--no-progress"]
URL_IMAGE = "https://example.com/ref.png"


def line(prompt: str, **fields: Any) -> str:
    """One JSONL job with its own prompt (prompts tell the simulator's tasks apart)."""
    return json.dumps({"images": [URL_IMAGE], "prompt": prompt, **fields})


class World:
    """A simulator thread, a jobs file and output folders, driven through the CLI."""

    def __init__(self, st: SimThread, root: Path) -> None:
        self.st = st
        self.root = root
        self.jobs = root / "jobs.jsonl"
        self.out = root / "out"
        self.env = clean_env(**st.env())
        #: Every job identity ever seen in a manifest, with the prompt of its line.
        self.prompts: dict[str, str] = {}

    def write(self, lines: list[str], path: Path | None = None) -> Path:
        """Write the jobs file (newline-terminated lines)."""
        path = path or self.jobs
        path.write_text("".join(text + "\n" for text in lines), encoding="utf-8")
        return path

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `kling-async ARGS` to the end; a traceback is always a failure."""
        done = subprocess.run(
            [*CLI, *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )
        assert "Traceback" not in done.stderr, done.stderr
        if args[0] in ("run", "download"):  # one result line (stdout) per job, never two
            jobs = [text.partition("): ")[0] for text in done.stdout.splitlines() if "): " in text]
            assert len(jobs) == len(set(jobs)), done.stdout
        return done

    def run(self, *extra: str, out: Path | None = None, jobs: Path | None = None) -> Any:
        """`kling-async run JOBS --out OUT` with fast settings."""
        out = out or self.out
        return self.cli("run", str(jobs or self.jobs), "--out", str(out), *FAST, *extra)

    def stats(self) -> dict[str, Any]:
        """The simulator's counters."""
        return self.st.stats()

    def creates(self) -> int:
        """Tasks the account was asked to create (and did)."""
        return int(self.stats()["accepted_creates"])

    def task(self, ident: str) -> Any:
        """The simulator's own record of a task (request, video id), by task or external id."""
        return self.st.call(self.st.sim._core.store.get, ident)

    def check(
        self,
        out: Path | None = None,
        jobs: Path | None = None,
        *,
        adopted: frozenset[str] = frozenset(),
    ) -> list[dict[str, Any]]:
        """Everything the folder claims, checked against the jobs file, the disk and Kling.

        Each manifest row in the jobs file names the task created for *that line's* content,
        each removed row the task of the job it was; no task is named twice; every file is
        its own task's video (plain or watermarked), byte for byte; nothing else is in
        videos/, and no `.part` is left. `adopted`: external ids taken over on purpose
        (--adopt-existing), whose task was made for other content.
        """
        out = out or self.out
        text = (jobs or self.jobs).read_text(encoding="utf-8").splitlines()
        by_line = {n: _prompt(t) for n, t in enumerate(text, 1) if t.strip() and t[0] != "#"}
        rows = manifest(out)
        task_ids = [row["task_id"] for row in rows if row["task_id"]]
        assert len(task_ids) == len(set(task_ids)), "two jobs name one task"
        recorded = set()
        for row in rows:
            if row["in_jobs_file"]:
                prompt = by_line[row["line"]]
                self.prompts[row["job_id"]] = prompt
            else:
                assert row["line"] is None, row
                prompt = self.prompts.get(row["job_id"])
            if row["task_id"] is None:
                assert not row["files"], row
                continue
            task = self.task(row["task_id"])
            assert task is not None, row
            assert task.external_task_id == row["external_task_id"], row
            if prompt is not None and row["external_task_id"] not in adopted:
                assert task.request.prompt == prompt, (row, task.request.prompt)
            for record in row["files"]:
                data = (out / record["path"]).read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                assert (len(data), digest) == (record["bytes"], record["sha256"]), record
                marked = record.get("watermarked", record["path"].endswith("-wm.mp4"))  # 0.1
                served = self.st.sim.video_sha256(task.video_id, watermark=marked)
                assert digest == served, f"{record['path']} is not its own task's video"
                recorded.add(record["path"])
        on_disk = {f"videos/{p.name}" for p in (out / "videos").iterdir()}
        assert on_disk == recorded, on_disk ^ recorded
        return rows


def _prompt(text: str) -> str | None:
    try:
        return json.loads(text).get("prompt")  # type: ignore[no-any-return]
    except ValueError:  # an invalid line: no task to compare with
        return None


def by_prompt(rows: list[dict[str, Any]], world: World) -> dict[str, str]:
    """prompt → task_id for the rows in the jobs file (prompts unique in these tests)."""
    return {world.prompts[row["job_id"]]: row["task_id"] for row in rows if row["in_jobs_file"]}
