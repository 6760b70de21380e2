"""The README's tours, run as written against a real `twofold serve`, output compared line by line.

The shop's tour runs against `make run` and `make run-cluster`; the bank's and the social network's
against `make run APP=bank` and `make run APP=social`.

Ids and timestamps differ from run to run, so both sides have them masked before comparing;
everything else must match exactly.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(\+00:00|Z)")


TOURS = {
    "shop": "## A five-minute tour\n",
    "bank": "## The bank\n",
    "social": "## The social network\n",
}  # app → the README section of its tour


def tour_steps(app: str = "shop") -> list[tuple[str, str]]:
    """(command, expected output) for each `$` line in the app's tour section's console blocks."""
    readme = (ROOT / "README.md").read_text()
    tour = readme.split(TOURS[app], 1)[1].split("\n## ", 1)[0]
    steps: list[tuple[str, str]] = []
    for block in re.findall(r"```console\n(.*?)```", tour, re.S):
        lines = block.splitlines()
        index = 0
        while index < len(lines):
            command = lines[index].removeprefix("$ ")
            index += 1
            while command.endswith("\\"):
                command = command[:-1] + lines[index].strip()
                index += 1
            output = []
            while index < len(lines) and not lines[index].startswith("$ "):
                output.append(lines[index])
                index += 1
            steps.append((command, "\n".join(output)))
    return steps


def masked(text: str) -> str:
    return TIME.sub("<time>", UUID.sub("<uuid>", text)).strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(process: subprocess.Popen[str], port: int, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = process.communicate()[0]
            pytest.fail(f"the app did not start:\n{output[-6000:]}")
        time.sleep(0.2)


@pytest.fixture(
    params=[
        ("shop", "make run"),
        pytest.param(("shop", "make run-cluster"), marks=pytest.mark.slow),
        ("bank", "make run"),
        ("social", "make run"),
    ],
    ids=["shop-make-run", "shop-make-run-cluster", "bank-make-run", "social-make-run"],
)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """An app as ``make run`` (one process) or ``make run-cluster`` (PostgreSQL, NATS, a process each) serves it."""
    app, how = request.param
    port = free_port()
    # This checkout's twofold, before any installed one: the tour documents the code beside it.
    env = {**os.environ, "PORT": str(port), "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    if how == "make run":
        arguments, within = ["serve", f"examples.{app}:{app}"], 30.0
    else:
        arguments, within = ["cluster", f"examples.{app}:{app}", "--data", str(tmp_path / "cluster")], 120.0
    process = subprocess.Popen(
        [sys.executable, "-c", "from twofold.cli import main; main()", *arguments],
        cwd=tmp_path,  # the embedded stores go to ./data, here
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_ready(process, port, within)
        yield app, port
    finally:
        process.terminate()  # what Ctrl-C does: the cluster stops every process it started
        try:
            output = process.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0]
    listening = [p for p in map(int, re.findall(r"127\.0\.0\.1:(\d+)", output)) if accepts(p)]
    assert not listening, f"still listening after the app stopped: {listening}\n{output[-3000:]}"


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("app", sorted(TOURS))
def test_each_readme_tour_has_steps_to_run(app: str) -> None:
    assert len(tour_steps(app)) >= 8


def test_the_readme_tour_runs_exactly_as_written(served: tuple[str, int]) -> None:
    app, port = served
    for command, expected in tour_steps(app):
        live = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        # A read may run before the saga has settled what it shows: reads are retried for a while.
        attempts = 1 if " -X " in command else 50
        for _ in range(attempts):
            result = subprocess.run(["bash", "-c", live], capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, f"{command}\nfailed: {result.stderr}"
            if masked(result.stdout) == masked(expected):
                break
            time.sleep(0.2)
        assert masked(result.stdout) == masked(expected), f"$ {command}"
