"""`python manage.py demo`: the whole of Steward on one machine, for a look around.

    python manage.py demo [--port 8000] [--sim-port 8100] [--no-samples] [--latency-ms N] [--fault-rate F]

Steps:
  a. migrate the database;
  b. create (or update) the demo users: admin, operator and three reviewers (finance, legal,
     reviewer), each with a fixed, printed demo password;
  c. start the child processes: the LLM simulator (`manage.py llm_sim`), a Celery worker
     (thread pool), Celery beat (the sweeper's clock) and the web server (`runserver`, with
     DEBUG off: see `web_env`);
  d. wait until the simulator and the web server answer /healthz;
  e. submit the sample documents in orchestrator/samples/ (only when there are no tasks yet, so
     running the demo again does not duplicate them);
  f. print a banner with the URL, the users and their passwords, and the simulator's address;
  g. wait. Ctrl-C, SIGTERM, or any child exiting on its own stops every child (SIGTERM, then
     SIGKILL after 10 s) and ends the demo.

Each child runs in its own session (so a Ctrl-C reaches only this command, which then stops the
children in order), dies with this command on Linux even if it is killed outright, and has its
output shown with its name in front. The demo is for local use only: the passwords are public.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"
# Submitted in this order, so the "-duplicate" file is the one flagged as a duplicate of the
# original. Any other file in the folder (except README.md) is submitted after these.
SAMPLE_ORDER = [
    "invoice-acme-small.txt",
    "invoice-northwind-large.txt",
    "contract-globex-services.txt",
    "report-q3-operations.txt",
    "email-vendor-bank-change.eml",
    "invoice-injection.txt",
    "invoice-broken-supplier.txt",
    "invoice-acme-small-duplicate.txt",
]

# username, role, review queue (reviewers only), password. Local demo credentials only.
DEMO_USERS = [
    ("admin", "admin", None, "steward-admin"),
    ("operator", "operator", None, "steward-operator"),
    ("finance", "reviewer", "finance_director", "steward-finance"),
    ("legal", "reviewer", "legal_team", "steward-legal"),
    ("reviewer", "reviewer", "standard_queue", "steward-reviewer"),
]

READY_TIMEOUT_S = 60
STOP_GRACE_S = 10


class Stop(Exception):
    """Raised by the SIGTERM/SIGHUP handler to leave the wait loop."""


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of what every child gets
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def exit_code(self) -> int | None:
        return self.process.poll() if self.process else None


def _death_signal_setter():
    """Linux: a function for subprocess' preexec_fn that asks the kernel to SIGTERM the child when
    the demo process dies, even by SIGKILL. None elsewhere. libc is loaded here, in the parent,
    so the child only makes one system call between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    PR_SET_PDEATHSIG = 1

    def set_death_signal() -> None:  # pragma: no cover - runs in the child
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return set_death_signal


class Command(BaseCommand):
    help = "Run the whole of Steward locally: simulator, worker, beat, web server, demo users and samples."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="web server port (default 8000)")
        parser.add_argument("--sim-port", type=int, default=8100, help="LLM simulator port (default 8100)")
        parser.add_argument("--no-samples", action="store_true", help="do not submit the sample documents")
        # Handed to the simulator, to rehearse a slow or failing model (llm_sim's own options).
        parser.add_argument("--latency-ms", type=float, default=0,
                            help="the simulated model's delay before each answer (default 0)")
        parser.add_argument("--fault-rate", type=float, default=0.0,
                            help="share of model calls that fail, 0 to 1: timeouts, 429s, 5xx, bad JSON, tool loops "
                                 "(default 0)")

    def handle(self, *args, **options):
        port, sim_port = options["port"], options["sim_port"]
        latency_ms, fault_rate = options["latency_ms"], options["fault_rate"]
        if not 0.0 <= fault_rate <= 1.0:
            raise CommandError(f"--fault-rate {fault_rate:g} is not a share: give a number from 0 to 1 (0.05 for 5%).")
        if latency_ms < 0:
            raise CommandError(f"--latency-ms {latency_ms:g} is negative: give 0 or more milliseconds.")
        self.output_lock = threading.Lock()
        self.children: list[Child] = []

        for name, number in (("web server", port), ("simulator", sim_port)):
            if not _port_is_free(number):
                raise CommandError(
                    f"Port {number} (for the {name}) is already in use: is another demo running? "
                    f"Stop it, or pick another port with --{'port' if name == 'web server' else 'sim-port'}."
                )

        # (a) database
        self.say("Migrating the database ...")
        call_command("migrate", interactive=False, verbosity=0)

        # (b) demo users
        self.say("Creating the demo users ...")
        for username, role, queue, password in DEMO_USERS:
            command = [username, "--role", role, "--password", password]
            if queue:
                command += ["--queue", queue]
            call_command("add_user", *command)

        # (c) child processes
        sim_url = f"http://127.0.0.1:{sim_port}/v1"
        web_url = f"http://127.0.0.1:{port}"
        webhook_url = os.environ.get("STEWARD_WEBHOOK_URL") or f"http://127.0.0.1:{sim_port}/sim/webhook"
        # Links in emails and chat messages lead to this web server, unless the person set another.
        base_url = os.environ.get("STEWARD_BASE_URL") or web_url
        env = self.child_env(sim_url, webhook_url, base_url)
        settings.STEWARD_SIMULATOR_URL = sim_url  # this process too, for consistency
        settings.STEWARD_BASE_URL = base_url
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        python = sys.executable
        self.children = [
            Child("simulator", [python, manage, "llm_sim", "--port", str(sim_port),
                                "--latency-ms", f"{latency_ms:g}", "--fault-rate", f"{fault_rate:g}"]),
            Child("worker", [python, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                             "--pool", "threads", "--concurrency", "4", *self.worker_queue_args()]),
            Child("beat", [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"]),
            Child("web", [python, manage, "runserver", f"127.0.0.1:{port}", "--noreload"], env=self.web_env()),
        ]

        previous_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGHUP, self.on_signal)
        exit_code = 0
        try:
            self.start_children(env)

            # (d) readiness
            self.say("Waiting for the simulator and the web server ...")
            self.wait_until_ready({
                "simulator": f"http://127.0.0.1:{sim_port}/healthz",
                "web": f"{web_url}/healthz",
            })

            # (e) sample documents
            if options["no_samples"]:
                self.say("Not submitting the sample documents (--no-samples).")
            else:
                self.submit_samples()

            # (f) banner
            self.print_banner(web_url, sim_url, webhook_url, latency_ms, fault_rate)

            # (g) run until stopped
            exit_code = self.wait_for_exit()
        except (KeyboardInterrupt, Stop):
            self.say("\nStopping ...")
        finally:
            try:
                self.stop_children()
            finally:
                for sig, handler in previous_handlers.items():
                    signal.signal(sig, handler)
        if exit_code:
            raise CommandError("The demo stopped because a process exited unexpectedly (see above).",
                               returncode=exit_code)
        self.say("Steward demo stopped.")

    # --- output -------------------------------------------------------------------------------

    def say(self, message: str, style=None) -> None:
        with self.output_lock:
            self.stdout.write(style(message) if style else message)
            self.stdout.flush()

    def relay_output(self, child: Child) -> None:
        """Copy one child's output to ours, each line prefixed with the child's name."""
        width = max(len(c.name) for c in self.children)
        assert child.process and child.process.stdout
        for line in child.process.stdout:
            with self.output_lock:
                sys.stdout.write(f"{child.name:>{width}} | {line.rstrip()}\n")
                sys.stdout.flush()

    # --- children -----------------------------------------------------------------------------

    def child_env(self, sim_url: str, webhook_url: str, base_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env["STEWARD_SIMULATOR_URL"] = sim_url
        env["STEWARD_WEBHOOK_URL"] = webhook_url  # the simulator's webhook sink unless set
        env["STEWARD_BASE_URL"] = base_url  # the worker writes the emailed approve/reject links
        env["PYTHONUNBUFFERED"] = "1"  # so the output shows up line by line
        # Loopback traffic never goes through a proxy.
        for name in ("NO_PROXY", "no_proxy"):
            hosts = [h for h in env.get(name, "").split(",") if h]
            env[name] = ",".join(hosts + [h for h in ("127.0.0.1", "localhost") if h not in hosts])
        return env

    def web_env(self) -> dict[str, str]:
        """The web server runs with DEBUG off, so people see Steward's own pages (a wrong address
        gets the 404 page, not Django's list of every URL) as in production. WhiteNoise serves
        the static files either way. What `make demo` needs DEBUG for is given here instead: the
        same SECRET_KEY as the worker (it signs the emailed links the web server checks), cookies
        over plain HTTP on loopback, and mail still written to var/mail."""
        # This process's settings, which already hold whatever the person set in the environment.
        return {"DEBUG": "0", "SECRET_KEY": settings.SECRET_KEY, "EMAIL_BACKEND": settings.EMAIL_BACKEND,
                "STEWARD_SECURE_COOKIES": "1" if settings.SECURE_COOKIES else "0"}

    def worker_queue_args(self) -> list[str]:
        """With STEWARD_WORKER_QUEUES set, the one demo worker consumes every queue."""
        extra = sorted(set(settings.STEWARD_WORKER_QUEUES.values()))
        if not extra:
            return []
        return ["-Q", ",".join([settings.CELERY_TASK_DEFAULT_QUEUE, *extra])]

    def start_children(self, env: dict[str, str]) -> None:
        # Start every child before any output thread: preexec_fn is only safe in a
        # single-threaded process.
        preexec = _death_signal_setter()
        for child in self.children:
            self.say(f"Starting {child.name}: {' '.join(child.args[1:])}")
            child.process = subprocess.Popen(
                child.args,
                cwd=settings.BASE_DIR,
                env={**env, **child.env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
                preexec_fn=preexec,
            )
        for child in self.children:
            child.reader = threading.Thread(target=self.relay_output, args=(child,), daemon=True)
            child.reader.start()

    def died(self) -> Child | None:
        return next((c for c in self.children if c.exit_code is not None), None)

    def wait_until_ready(self, health_urls: dict[str, str]) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        pending = dict(health_urls)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while pending:
            dead = self.died()
            if dead:
                self.flush_output(dead)
                raise CommandError(
                    f"The {dead.name} process exited with code {dead.exit_code} before Steward was "
                    f"ready; its output is above ({' '.join(dead.args[1:])})."
                )
            for name, url in list(pending.items()):
                try:
                    with opener.open(url, timeout=2) as response:
                        if response.status == 200:
                            self.say(f"{name} is ready ({url})")
                            del pending[name]
                except (urllib.error.URLError, OSError):
                    pass
            if pending and time.monotonic() > deadline:
                raise CommandError(
                    f"Timed out after {READY_TIMEOUT_S} s waiting for "
                    + ", ".join(f"the {name} at {url}" for name, url in pending.items())
                    + "; see its output above."
                )
            if pending:
                time.sleep(0.5)

    def submit_samples(self) -> None:
        from orchestrator.models import Task

        if Task.objects.exists():
            self.say("Tasks already exist: not submitting the sample documents again.")
            return
        found = {p.name: p for p in SAMPLES_DIR.iterdir() if p.is_file() and p.name != "README.md"}
        names = [n for n in SAMPLE_ORDER if n in found] + sorted(set(found) - set(SAMPLE_ORDER))
        self.say(f"Submitting {len(names)} sample documents from {SAMPLES_DIR} ...")
        call_command("submit", *(str(found[n]) for n in names))

    def wait_for_exit(self) -> int:
        """Block until a child exits on its own (returns 1) or we are interrupted (raises)."""
        while True:
            dead = self.died()
            if dead:
                self.flush_output(dead)
                self.say(
                    f"The {dead.name} process exited unexpectedly with code {dead.exit_code}; "
                    "stopping everything.",
                    self.style.ERROR,
                )
                return 1
            time.sleep(0.5)

    def flush_output(self, child: Child) -> None:
        """Let a dead child's last lines reach the screen before we explain what happened."""
        if child.reader:
            child.reader.join(timeout=2)

    def stop_children(self) -> None:
        running = [c for c in self.children if c.process and c.exit_code is None]
        if running:
            self.say(f"Stopping {', '.join(c.name for c in running)} (Ctrl-C again to force) ...")
        for child in self.children:
            self.signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            while time.monotonic() < deadline and any(c.exit_code is None for c in running):
                time.sleep(0.2)
        except (KeyboardInterrupt, Stop):
            pass
        # From here on nothing may interrupt us half-way (handle() restores the handlers).
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for child in self.children:
            if child.process and child.exit_code is None:
                self.say(f"{child.name} did not stop in time: killing it.")
            # Also reaches anything the child started itself, in the same process group.
            self.signal_group(child, signal.SIGKILL)
        for child in self.children:
            if child.process:
                try:
                    child.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.say(f"{child.name} (pid {child.process.pid}) is still running.", self.style.ERROR)
        for child in self.children:
            self.flush_output(child)

    @staticmethod
    def signal_group(child: Child, sig: int) -> None:
        if not child.process:
            return
        try:
            # start_new_session=True made the child the leader of its own process group.
            os.killpg(child.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def on_signal(self, signum, frame) -> None:
        raise Stop(signal.Signals(signum).name)

    # --- banner -------------------------------------------------------------------------------

    def print_banner(self, web_url: str, sim_url: str, webhook_url: str, latency_ms: float = 0,
                     fault_rate: float = 0.0) -> None:
        width = max(len(u[0]) for u in DEMO_USERS)
        lines = [
            "",
            "=" * 72,
            f"  Steward is running at {web_url}",
            "",
            "  Sign in as:",
        ]
        for username, role, queue, password in DEMO_USERS:
            where = f"{role}, queue {queue}" if queue else role
            lines.append(f"    {username:<{width}}  password {password:<18} ({where})")
        lines += [
            "",
            "  These are DEMO credentials, public in the source code: local use only.",
            "",
            f"  LLM simulator:  {sim_url}  (answers are simulated, not a real model)",
            f"                  {latency_ms:g} ms per answer, {fault_rate:.0%} of calls fail"
            + ("" if fault_rate else " (rehearse failures: make demo DEMO_ARGS=\"--fault-rate 0.1\")"),
            f"  Webhook target: {webhook_url}",
            "  Ctrl-C stops everything.",
            "=" * 72,
            "",
        ]
        self.say("\n".join(lines), self.style.SUCCESS)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
