"""`make run`'s second half: the web server and one task cluster, in the foreground.

Both run as child processes, each in its own process group; Ctrl-C or SIGTERM
stops both (terminate, wait, then kill), and if either exits on its own the
other is stopped too. Once the web server accepts connections and the cluster has
published its status, the URL and the login are printed: the last lines before
the servers' own log (requests, tasks, the demo model's epochs), so a new user
finds them without scrolling.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from predictions.management.commands.bootstrap import PASSWORD_FILE

STOP_TIMEOUT_SECONDS = 30
# The banner waits this long at most for both servers (a slow machine, a broken cluster).
READY_TIMEOUT_SECONDS = 60
# runserver prints its own banner just after it binds, the cluster logs "running" just
# after it publishes its status: a moment more keeps those lines above ours.
READY_GRACE_SECONDS = 0.5


class Command(BaseCommand):
    help = "Run the web server (runserver) and one task cluster (qcluster) until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--addr", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument(
            "--bootstrap",
            action="store_true",
            help="run `manage.py bootstrap` first, in this process (what `make run` does: one Python start-up less)",
        )

    def handle(self, *args, port: int, addr: str, bootstrap: bool, **options):
        if bootstrap:
            call_command("bootstrap", verbosity=options["verbosity"])
        manage_py = str(Path(settings.BASE_DIR) / "manage.py")
        commands = {
            # No autoreloader: its extra process outlives a terminated parent.
            "web": [sys.executable, manage_py, "runserver", f"{addr}:{port}", "--noreload"],
            "cluster": [sys.executable, manage_py, "qcluster"],
        }
        children: dict[str, subprocess.Popen] = {}
        self.signals_received = 0

        def on_signal(signum, frame):
            self.signals_received += 1

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        failed = False
        # Unbuffered: the children's lines reach a log file or pipe in the order they were written.
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            for name, command in commands.items():
                # Own process group: the terminal's Ctrl-C reaches only this process,
                # which then stops each child (and the cluster's workers) in order.
                children[name] = subprocess.Popen(command, start_new_session=True, env=environment)
            if self._wait_until_ready(children, _connect_host(addr), port):
                self._banner(addr, port)
            while not self.signals_received:
                exited = {name: child.returncode for name, child in children.items() if child.poll() is not None}
                if exited:
                    failed = True
                    self.stderr.write(f"{', '.join(f'{n} exited with {c}' for n, c in exited.items())}; stopping.")
                    break
                time.sleep(0.5)
        finally:
            self._stop(children)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failed:
            sys.exit(1)

    def _wait_until_ready(self, children: dict[str, subprocess.Popen], host: str, port: int) -> bool:
        """Until the web server accepts connections and the cluster has published its status (or
        READY_TIMEOUT_SECONDS pass); False when a child exits or a signal arrives first."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        web_ready = cluster_ready = False
        while not (web_ready and cluster_ready) and time.monotonic() < deadline:
            if self.signals_received or any(child.poll() is not None for child in children.values()):
                return False  # the main loop reports it
            web_ready = web_ready or _accepts_connections(host, port)
            cluster_ready = cluster_ready or _cluster_running(children["cluster"].pid)
            time.sleep(0.2)
        time.sleep(READY_GRACE_SECONDS)
        return True

    def _banner(self, addr: str, port: int) -> None:
        from predictions.selectors.demo import demo_training_unfinished

        superuser = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
        lines = [f"Review tool: http://{_connect_host(addr)}:{port}/admin/"]
        if superuser is not None:
            lines.append(f"Log in as {superuser.username!r} {_password_hint(superuser)}.")
        demo = demo_training_unfinished()
        if demo is not None and not demo.failed:
            lines.append(
                "The demo model is training in the task cluster (epochs logged below and on the admin index); "
                "uploads are predicted once it is ready."
            )
        lines.append("Web server and task cluster running; Ctrl-C stops both.")
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))

    def _stop(self, children: dict[str, subprocess.Popen]) -> None:
        """SIGTERM to every child; after STOP_TIMEOUT_SECONDS, or a second Ctrl-C, SIGKILL."""
        signals_before = self.signals_received
        for child in children.values():
            if child.poll() is None:
                # The process only, not its group: qcluster's forked processes
                # inherit its SIGTERM handler and deadlock if they all run it.
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        if any(child.poll() is None for child in children.values()):
            self.stdout.write("Stopping; the cluster finishes the tasks it holds (Ctrl-C again to kill it now).")
        while any(child.poll() is None for child in children.values()):
            if time.monotonic() > deadline or self.signals_received > signals_before:
                names = ", ".join(name for name, child in children.items() if child.poll() is None)
                self.stderr.write(f"Killing {names}.")
                break
            time.sleep(0.2)
        # Kill what is left, including what the children forked (the cluster's workers).
        for child in children.values():
            _signal_group(child, signal.SIGKILL)
            child.wait()


def _connect_host(addr: str) -> str:
    return "127.0.0.1" if addr in ("0.0.0.0", "::") else addr


def _password_hint(user) -> str:
    """The generated password itself until the admin has logged in once (a new user needs it
    now); afterwards only where it is kept."""
    password_file = Path(settings.VAR_DIR) / PASSWORD_FILE
    if not password_file.exists():
        return "with your password"
    if user.last_login is None:
        password = password_file.read_text().strip()
        return f"with password {password} (kept in {password_file})"
    return f"(password in {password_file})"


def _accepts_connections(host: str, port: int) -> bool:
    # A bare connection, not a request: no line in the server's log before the banner.
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _cluster_running(pid: int) -> bool:
    """Whether the cluster started as ``pid`` has published its status (what `qmonitor` reads)."""
    from django_q.status import Stat

    try:
        return any(stat.pid == pid for stat in Stat.get_all())
    except Exception:  # the status cache unreachable: the banner comes after the timeout instead
        return False


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
