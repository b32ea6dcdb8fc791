"""Batch upscaling (`espcn_hf.batch.upscale_files`): one process in-process, and two processes under
`accelerate launch --multi_gpu --num_processes 2` (MULTI_CPU over gloo on a machine without GPU), killed with
SIGKILL mid-job and resumed. The two launches take ~10-15 s on 2 cores (two Python + torch start-ups each)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import natural_image, tiny_model
from PIL import Image

from espcn_hf import upscale
from espcn_hf.batch import upscale_files
from espcn_hf.fileio import is_partial_file

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")
NUM_IMAGES = 8


@pytest.fixture
def folder(tmp_path) -> tuple[list[Path], list[Path]]:
    inputs = tmp_path / "in"
    inputs.mkdir()
    files = []
    for i in range(NUM_IMAGES):
        path = inputs / f"img{i}.png"
        Image.fromarray(natural_image(20 + i, 24, seed=i)).save(path)
        files.append(path)
    return files, [tmp_path / "out" / f"img{i}_x3.png" for i in range(NUM_IMAGES)]


def assert_complete(outputs, files, model) -> None:
    for source, target in zip(files, outputs, strict=True):
        expected = np.asarray(upscale(Image.open(source), model))
        assert np.array_equal(np.asarray(Image.open(target)), expected), target


def test_one_process_writes_skips_and_reports_bad_files(folder, tiny_checkpoint, tmp_path):
    files, outputs = folder
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = upscale_files([*files, bad], [*outputs, tmp_path / "out" / "broken_x3.png"], tiny_checkpoint)
    assert len(result.written) == NUM_IMAGES and result.skipped == [] and result.num_processes == 1
    assert [source for source, _ in result.failed] == [str(bad)] and str(bad) in result.failed[0][1]
    model = tiny_model(3)
    assert_complete(outputs, files, model)

    outputs[0].unlink()  # a re-run redoes only what is missing
    again = upscale_files(files, outputs, tiny_checkpoint, skip_existing=True)
    assert again.written == [str(outputs[0])] and len(again.skipped) == NUM_IMAGES - 1
    assert len(upscale_files(files, outputs, tiny_checkpoint).written) == NUM_IMAGES  # default: write all


class Recorder:
    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {"info": [], "warning": [], "error": []}

    def info(self, message: str) -> None:
        self.lines["info"].append(message)

    def warning(self, message: str) -> None:
        self.lines["warning"].append(message)

    def error(self, message: str) -> None:
        self.lines["error"].append(message)


def test_reporter_gets_each_failure_as_it_happens(folder, tiny_checkpoint, tmp_path):
    """The CLI's loop is this one: a reporter receives one error line per failed file (the lines in `failed`),
    an input named as an output is refused (also through a hard link) and the other files are still done."""
    files, outputs = folder
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    link = tmp_path / "out" / "link_x3.png"
    link.parent.mkdir()
    os.link(files[1], link)
    before = files[1].read_bytes()
    recorder = Recorder()
    result = upscale_files(
        [*files, bad, files[0]], [*outputs, tmp_path / "out" / "broken_x3.png", link], tiny_checkpoint,
        reporter=recorder, progress=False,
    )  # fmt: skip
    assert recorder.lines["error"] == [message for _, message in result.failed]
    assert [source for source, _ in result.failed] == [str(bad), str(files[0])]
    assert (
        recorder.lines["error"][0].startswith(str(bad))
        and "refusing to overwrite" in recorder.lines["error"][1]
    )
    assert files[1].read_bytes() == before and len(result.written) == NUM_IMAGES


JOB = """
import json, os, sys, time
from pathlib import Path
import espcn_hf.batch as batch
import espcn_hf.inference
from espcn_hf import upscale
from accelerate import PartialState

files = [Path(p) for p in json.loads(sys.argv[1])]
outputs = [Path(p) for p in json.loads(sys.argv[2])]
delay = float(sys.argv[4])

def slow_upscale(*args, **kwargs):
    time.sleep(delay)
    return upscale(*args, **kwargs)

espcn_hf.inference.upscale = slow_upscale
Path(sys.argv[5], f"pid{os.environ['RANK']}").write_text(str(os.getpid()))
result = batch.upscale_files(files, outputs, sys.argv[3], skip_existing=True, progress=False)
state = PartialState()
report = {"written": result.written, "skipped": result.skipped, "failed": result.failed,
          "num_processes": result.num_processes, "shares": result.shares, "distributed_type": str(state.distributed_type)}
Path(sys.argv[5], f"rank{state.process_index}.json").write_text(json.dumps(report))
state.destroy_process_group()  # as the CLI and accelerate's end_training do: without it, gloo's teardown at exit
                               # aborted rank 0 ("terminate called without an active exception") in 2 of 25 runs
"""


def accelerate_launch(port: int, *args: str, multi_gpu: bool = True) -> list[str]:
    """`accelerate launch [--multi_gpu] --num_processes 2 ARGS...` on its own rendezvous port (2 CPU processes with
    --multi_gpu; accelerate starts one without it)."""
    command = [
        str(ACCELERATE),
        "launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
    ]
    command += ["--dynamo_backend", "no", "--main_process_port", str(port)] + (
        ["--multi_gpu"] if multi_gpu else []
    )
    return command + list(args)


def launch(script: Path, files, outputs, checkpoint, delay: float, report_dir: Path, port: int, **popen):
    command = accelerate_launch(port, str(script))
    command += [json.dumps([str(f) for f in files]), json.dumps([str(o) for o in outputs])]
    command += [str(checkpoint), str(delay), str(report_dir)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    return subprocess.Popen(command, cwd=ROOT, env=env, **popen)


@pytest.mark.slow
def test_two_processes_split_the_files_and_resume_after_sigkill(folder, tiny_checkpoint, tmp_path):
    files, outputs = folder
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(JOB))
    reports = tmp_path / "reports"
    reports.mkdir()

    # 1. A slow job (0.5 s per file), killed with SIGKILL (launcher and both workers) once 2 outputs exist.
    log = tmp_path / "stderr.txt"  # a file, not a pipe: a full pipe would block the workers
    with open(log, "wb") as stderr:
        job = launch(script, files, outputs, tiny_checkpoint, 0.5, reports, 29547, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while sum(o.exists() for o in outputs) < 2 or len(list(reports.glob("pid*"))) < 2:
            assert job.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no outputs after 120 s"
            time.sleep(0.05)
    finally:
        # torch's launcher starts each worker in its own session: kill the workers by the pids they wrote, then
        # the launcher (all processes this test started).
        for pid_file in reports.glob("pid*"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        job.kill()
        job.wait(timeout=30)
    done_before = [o for o in outputs if o.exists()]
    assert 2 <= len(done_before) < NUM_IMAGES, "the job finished before it could be killed"
    out_dir = outputs[0].parent
    assert all(o in outputs or is_partial_file(o) for o in out_dir.iterdir())  # nothing half-written by name
    model = tiny_model(3)
    assert_complete(done_before, [files[outputs.index(o)] for o in done_before], model)

    # 2. The same command again: the two processes share the remaining files and skip the complete ones.
    with open(log, "wb") as stderr:
        job = launch(script, files, outputs, tiny_checkpoint, 0.0, reports, 29548, stderr=stderr)
    assert job.wait(timeout=180) == 0, log.read_text()[-3000:]
    rank0, rank1 = (json.loads((reports / f"rank{i}.json").read_text()) for i in range(2))
    assert rank0["distributed_type"] == "DistributedType.MULTI_CPU" and rank0["num_processes"] == 2
    assert rank0["written"] == rank1["written"]  # gathered: both processes know the totals
    assert sorted(rank0["written"]) == sorted(str(o) for o in outputs if o not in done_before)
    assert sorted(rank0["skipped"]) == sorted(str(files[outputs.index(o)]) for o in done_before)
    assert rank0["failed"] == []
    assert rank0["shares"] == [3, 3] if len(done_before) == 2 else min(rank0["shares"]) >= 1  # both worked
    assert_complete(outputs, files, model)


@pytest.mark.slow
def test_accelerate_launch_cli_upscale_two_processes(folder, tiny_checkpoint, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m espcn_hf.cli upscale IN -o OUT`, as the README says: the
    `model:` line once, one progress bar per process (labelled with its rank), and a summary of what each did."""
    files, _ = folder
    out = tmp_path / "cli_out"
    command = accelerate_launch(29549, "-m", "espcn_hf.cli", "upscale", str(files[0].parent), "-o", str(out),
                                "--model", str(tiny_checkpoint))  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f.stem}_x3.png" for f in files)
    assert_complete([out / f"{f.stem}_x3.png" for f in files], files, tiny_model(3))
    assert result.stdout.count("model: ") == 1, result.stdout
    assert "[0/2]" in result.stderr and "[1/2]" in result.stderr  # a bar per process, labelled
    summary = [line for line in result.stdout.splitlines() if line.startswith(f"{NUM_IMAGES} written")]
    assert summary == [f"{NUM_IMAGES} written, 0 already there (skipped), 0 failed (2 processes: process 0: 4 "
                       "written, 0 failed of 4; process 1: 4 written, 0 failed of 4)"]  # fmt: skip


@pytest.mark.slow
def test_one_process_on_a_cpu_says_how_to_start_several(folder, tiny_checkpoint, tmp_path):
    """`accelerate launch --num_processes 2` without --multi_gpu starts ONE process on a CPU: it says so."""
    files, _ = folder
    command = accelerate_launch(29550, "-m", "espcn_hf.cli", "upscale", str(files[0]), "-o", str(tmp_path / "o.png"),
                                "--model", str(tiny_checkpoint), multi_gpu=False)  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accelerate started one process; on CPUs `accelerate launch --multi_gpu" in result.stdout


@pytest.mark.slow
def test_killing_the_launcher_stops_the_workers(tmp_path, tiny_checkpoint):
    """Each worker runs in its own process session, so a SIGKILL of `accelerate launch` used to leave them
    running to the end of the job; they now stop within about a second, leaving only complete outputs."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(40):
        Image.fromarray(natural_image(200, 240, seed=i)).save(inputs / f"img{i:02d}.png")
    out = tmp_path / "out"
    command = accelerate_launch(29551, "-m", "espcn_hf.cli", "upscale", str(inputs), "-o", str(out), "--model",
                                str(tiny_checkpoint), "-q")  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("*.png"))):
        assert job.poll() is None and time.monotonic() < deadline, "no output before the launcher was killed"
        time.sleep(0.05)
    workers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_worker(p, out)]
    assert len(workers) == 2
    job.kill()
    job.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(Path(w).exists() and _is_worker(w, out) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(w).exists() and _is_worker(w, out) for w in workers), "workers outlived the launcher"
    done = [p for p in out.iterdir() if not is_partial_file(p)]
    assert 1 <= len(done) < 40
    files = [inputs / p.name.replace("_x3", "") for p in done]
    assert_complete(done, files, tiny_model(3))


def _is_worker(proc: Path, out: Path) -> bool:
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        status = (proc / "status").read_text()
    except OSError:
        return False
    launcher = any(arg.endswith(b"accelerate") for arg in cmdline[:2])
    return (
        b"espcn_hf.cli" in cmdline
        and str(out).encode() in cmdline
        and "State:\tZ" not in status
        and not launcher
    )
