"""Starting the pipeline's processes for bench/pipeline.py and bench/latency.py: the fake
OpenAI and Graph servers, pyloto (bench/pyloto_server.py) or the arq version
(bench/arq_app.py), and posting signed webhooks to them."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loadgen
from _common import (
    APP_SECRET,
    BENCH,
    GRAPH_TOKEN,
    INTERNAL_TOKEN,
    PHONE_NUMBER_ID,
    PYTHON,
    Processes,
    free_port,
    http_json,
    sign,
    wait_http,
    wait_until,
    webhook_body,
)

ARQ_SITE = BENCH / ".arq-site"
ARQ_REQUIREMENT = "arq==0.28.0"


@dataclass
class Fakes:
    """The fake OpenAI and Graph servers of a run."""

    openai_port: int
    graph_port: int
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def graph(self) -> str:
        """Base URL of the Graph fake."""
        return f"http://127.0.0.1:{self.graph_port}"

    @property
    def openai(self) -> str:
        """Base URL of the OpenAI fake."""
        return f"http://127.0.0.1:{self.openai_port}"

    def reset(self) -> None:
        """Forget what they counted."""
        for base in (self.graph, self.openai):
            http_json(f"{base}/reset", method="POST")

    def sends(self) -> dict[str, float]:
        """Inbound wamid → time.time() at which its reply reached the Graph fake."""
        found: dict[str, float] = http_json(f"{self.graph}/sends")
        return found

    def send_log(self) -> list[tuple[str, str, float, int | None]]:
        """Every send the Graph fake took: (recipient, inbound wamid replied to, time.time()
        of arrival, draft number when the OpenAI fake records)."""
        return [tuple(entry) for entry in http_json(f"{self.graph}/log")]  # type: ignore[misc]

    def drafts(self) -> list[list[dict[str, Any]]]:
        """The messages of every LLM#2 request, by draft number (a recording OpenAI fake)."""
        found: list[list[dict[str, Any]]] = http_json(f"{self.openai}/drafts")
        return found

    def stats(self) -> dict[str, Any]:
        """Counts and CPU seconds of both fakes."""
        return {
            "graph": http_json(f"{self.graph}/stats"),
            "openai": http_json(f"{self.openai}/stats"),
        }


@dataclass(frozen=True)
class Delay:
    """How long a fake waits before each answer: `low` seconds, or a draw from [low, high]
    (seeded) when `high` is above it."""

    low: float = 0.0
    high: float | None = None

    def argv(self, seed: int) -> list[str]:
        """The fake's command-line options."""
        if self.high is None or self.high <= self.low:
            return ["--delay", str(self.low)]
        return ["--delay", str(self.low), "--delay-max", str(self.high), "--seed", str(seed)]


def start_fakes(
    procs: Processes,
    llm_delay: float | Delay = 0.0,
    *,
    graph_delay: Delay | None = None,
    record: bool = False,
    seed: int = 0,
    cpu: int | None = None,
) -> Fakes:
    """Both fakes, each in its own process (pinned to `cpu` if given); `record`: the OpenAI
    fake keeps LLM#2's prompts (GET /drafts)."""
    fakes = Fakes(free_port(), free_port())
    llm = llm_delay if isinstance(llm_delay, Delay) else Delay(llm_delay)
    for kind, port, delay in (
        ("openai", fakes.openai_port, llm),
        ("graph", fakes.graph_port, graph_delay or Delay()),
    ):
        command = [PYTHON, str(BENCH / "fakes.py"), kind, "--port", str(port)]
        command += delay.argv(seed)
        if record and kind == "openai":
            command.append("--record")
        process = procs.start(f"fake-{kind}", command, cpu=cpu)
        wait_http(f"http://127.0.0.1:{port}/stats", process, procs, f"fake-{kind}")
        fakes.pids[f"fake-{kind}"] = process.pid
    return fakes


def service_env(redis_url: str, fakes: Fakes) -> dict[str, str]:
    """pyloto's settings for a run: Redis, the fakes, no pacing (the variables of
    docs/configuration.md)."""
    return {
        "STATE_BACKEND": "redis",
        "REDIS_URL": redis_url,
        # The bench's Redis keeps nothing on disk (figures of the code, not of the disk).
        "REDIS_DURABILITY": "none",
        "OPENAI_ENABLED": "true",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"{fakes.openai}/v1",
        "WHATSAPP_ACCESS_TOKEN": GRAPH_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "WHATSAPP_API_BASE_URL": fakes.graph,
        "WHATSAPP_PACING_SECONDS": "0",
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
        "LOG_LEVEL": "INFO",
    }


@dataclass
class Service:
    """The processes serving the pipeline and the port of their webhook."""

    port: int
    pids: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]]

    def stats(self) -> dict[str, Any]:
        """What the webhook process counted (GET /bench/stats)."""
        found: dict[str, Any] = http_json(f"http://127.0.0.1:{self.port}/bench/stats")
        return found


def start_pyloto(
    procs: Processes, env: dict[str, str], rates: str, name: str, cpu: int | None = None
) -> Service:
    """bench/pyloto_server.py (pyloto serve with a counting local queue), pinned to `cpu`
    if given."""
    port = free_port()
    command = [PYTHON, str(BENCH / "pyloto_server.py"), "--port", str(port)]
    process = procs.start(name, [*command, "--queue-rates", rates], env=env, cpu=cpu)
    wait_http(f"http://127.0.0.1:{port}/bench/stats", process, procs, name)
    return Service(port, {name: process.pid}, {name: process})


def ensure_arq_site() -> Path:
    """arq and its redis<6 in bench/.arq-site, installed on first use (pip --target)."""
    if not (ARQ_SITE / "arq").is_dir():
        print(f"installing {ARQ_REQUIREMENT} into {ARQ_SITE} (it needs redis<6) …", flush=True)
        subprocess.run(
            [PYTHON, "-m", "pip", "install", "--quiet", "--target", str(ARQ_SITE), ARQ_REQUIREMENT],
            check=True,
        )
    return ARQ_SITE


def start_arq(procs: Processes, env: dict[str, str], stats_file: Path) -> Service:
    """The arq webhook and worker processes, with arq's redis<6 first on the path."""
    site = ensure_arq_site()
    env = {**env, "PYTHONPATH": f"{site}:{BENCH}"}
    script = str(BENCH / "arq_app.py")
    worker = procs.start(
        "arq-worker", [PYTHON, script, "worker", "--stats", str(stats_file)], env=env
    )
    port = free_port()
    web = procs.start("arq-web", [PYTHON, script, "web", "--port", str(port)], env=env)
    wait_http(f"http://127.0.0.1:{port}/bench/stats", web, procs, "arq-web")

    def worker_ready() -> bool:
        if worker.poll() is not None:
            raise RuntimeError(f"arq worker exited:\n{procs.log_of('arq-worker')}")
        return "Starting worker" in procs.log_of("arq-worker")

    wait_until(worker_ready, 60, "the arq worker")
    pids = {"arq-web": web.pid, "arq-worker": worker.pid}
    return Service(port, pids, {"arq-web": web, "arq-worker": worker})


def webhook_requests(port: int, tag: str, count: int, first: int = 0) -> dict[str, bytes]:
    """wamid → a signed single-message webhook request, `count` of them."""
    requests = {}
    now = int(time.time())
    for index in range(first, first + count):
        wamid = f"wamid.BENCH{tag}{index:08d}"
        body = webhook_body(wamid, index, timestamp=now)
        requests[wamid] = loadgen.request_bytes(port, body, sign(body))
    return requests


def post(
    port: int, requests: dict[str, bytes], connections: int, rate: float | None = None
) -> dict[str, float]:
    """POST every request; wamid → time.time() when it was sent. Raises on a non-200."""
    ids = list(requests)
    sent = loadgen.run(loadgen.post_all(port, [requests[i] for i in ids], connections, rate))
    assert isinstance(sent, list)
    refused = [status for _, status in sent if status != 200]
    if refused:
        raise RuntimeError(f"{len(refused)} webhooks refused, e.g. HTTP {refused[0]}")
    return {wamid: at for wamid, (at, _) in zip(ids, sent, strict=True)}


def wait_for_sends(fakes: Fakes, wanted: set[str], timeout: float) -> dict[str, float]:
    """Poll the Graph fake until every wanted wamid's reply arrived; their arrival times."""
    deadline = time.monotonic() + timeout
    while True:
        arrived = int(http_json(f"{fakes.graph}/stats")["sends"])
        if arrived >= len(wanted):
            sends = fakes.sends()
            if wanted <= sends.keys():
                return {wamid: sends[wamid] for wamid in wanted}
        if time.monotonic() > deadline:
            missing = len(wanted - fakes.sends().keys())
            raise RuntimeError(f"{missing} of {len(wanted)} replies not sent after {timeout:.0f} s")
        time.sleep(0.1)
