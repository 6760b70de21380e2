"""The README's tour, run as written against a real `twofold serve`, output compared line by line.

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
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00")


def tour_steps() -> list[tuple[str, str]]:
    """(command, expected output) for each `$` line in the tour section's console blocks."""
    readme = (ROOT / "README.md").read_text()
    tour = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
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


@pytest.fixture
def shop_server(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "TWOFOLD_DATABASE_URL": f"sqlite:///{tmp_path}/shop.db"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from twofold.cli import main; main()", "serve", "examples.shop:shop"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                output = process.communicate()[0]
                pytest.fail(f"twofold serve did not start:\n{output}")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_the_readme_tour_has_steps_to_run() -> None:
    assert len(tour_steps()) >= 8


def test_the_readme_tour_runs_exactly_as_written(shop_server: int) -> None:
    for command, expected in tour_steps():
        live = command.replace("127.0.0.1:8000", f"127.0.0.1:{shop_server}")
        result = subprocess.run(["bash", "-c", live], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{command}\nfailed: {result.stderr}"
        assert masked(result.stdout) == masked(expected), f"$ {command}"
