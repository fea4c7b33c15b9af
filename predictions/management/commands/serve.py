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

STOP_TIMEOUT_SECONDS = 30


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
        self.signals_received = 0

        def on_signal(signum, frame):
            self.signals_received += 1

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        failed = False
        try:
            for name, command in commands.items():
                # Own process group: the terminal's Ctrl-C reaches only this process,
                # which then stops each child (and the cluster's workers) in order.
                children[name] = subprocess.Popen(command, start_new_session=True)
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


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
