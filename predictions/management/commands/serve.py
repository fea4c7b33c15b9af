"""`make run`'s second half: the web server and one task cluster, in the foreground.

Both run as child processes, each in its own process group; Ctrl-C or SIGTERM
stops both (terminate, wait, then kill), and if either exits on its own the
other is stopped too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from predictions.management.commands.bootstrap import PASSWORD_FILE

STOP_TIMEOUT_SECONDS = 15


class Command(BaseCommand):
    help = "Run the web server (runserver) and one task cluster (qcluster) until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--addr", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")

    def handle(self, *args, port: int, addr: str, **options):
        manage_py = str(Path(settings.BASE_DIR) / "manage.py")
        commands = {
            # No autoreloader: its extra process outlives a terminated parent.
            "web": [sys.executable, manage_py, "runserver", f"{addr}:{port}", "--noreload"],
            "cluster": [sys.executable, manage_py, "qcluster"],
        }
        children: dict[str, subprocess.Popen] = {}
        stopping = False

        def request_stop(signum, frame):
            nonlocal stopping
            stopping = True

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for name, command in commands.items():
                # Own process group: the terminal's Ctrl-C reaches only this process,
                # which then stops each child (and the cluster's workers) in order.
                children[name] = subprocess.Popen(command, start_new_session=True)
            self._banner(addr, port)
            while not stopping:
                exited = {name: child.returncode for name, child in children.items() if child.poll() is not None}
                if exited:
                    self.stderr.write(f"{', '.join(f'{n} exited with {c}' for n, c in exited.items())}; stopping.")
                    break
                time.sleep(0.5)
        finally:
            self._stop(children)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        codes = [child.returncode for child in children.values()]
        if not stopping and any(codes):
            sys.exit(1)

    def _banner(self, addr: str, port: int) -> None:
        host = "127.0.0.1" if addr in ("0.0.0.0", "::") else addr
        superuser = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
        lines = [f"Review tool: http://{host}:{port}/admin/"]
        if superuser is not None:
            password_file = Path(settings.VAR_DIR) / PASSWORD_FILE
            where = f"password in {password_file}" if password_file.exists() else "your password"
            lines.append(f"Log in as {superuser.username!r} ({where}).")
        lines.append("Web server and task cluster running; Ctrl-C stops both.")
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))

    def _stop(self, children: dict[str, subprocess.Popen]) -> None:
        running = {name: child for name, child in children.items() if child.poll() is None}
        for child in running.values():
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for name, child in running.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop within {STOP_TIMEOUT_SECONDS} s; killing it.")
                _signal_group(child, signal.SIGKILL)
                child.wait()
        # Anything the children left behind in their groups (a cluster's workers).
        for child in children.values():
            _signal_group(child, signal.SIGKILL)


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
