"""Servers the tests start (a Ray cluster, torchrun's rendezvous) must be reachable from this machine
alone. Neither library can be told so: Ray replaces a node IP of 127.0.0.1 with the machine's
outward address and binds its gRPC ports to every interface, and torchrun's rendezvous store binds
every interface. So the commands that start them run in a network namespace whose one interface is
loopback, where every address they can bind is 127.0.0.1 (or ::1)."""

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Runs in the new namespace: brings its loopback interface up (a new one starts down), says so,
# then holds the namespace open until its stdin closes.
_HOLDER = """
import fcntl, socket, struct, sys
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack_from("16xh", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16s24x", b"lo")))[0]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))
print("up", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def loopback_only():
    """The prefix that runs a command in one loopback-only network namespace, which lives until the
    block ends (commands given the same prefix share it). Skips the test, saying why, where this
    machine cannot make one (no util-linux, or user namespaces turned off)."""
    if not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs util-linux's unshare and nsenter, to keep the test's servers on loopback")
    holder = subprocess.Popen(
        ["unshare", "--net", "--map-root-user", sys.executable, "-c", _HOLDER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if holder.stdout.readline().strip() != "up":
            holder.wait(timeout=30)
            why = holder.stderr.read().strip().splitlines()
            pytest.skip(f"no loopback-only network namespace here ({why[-1] if why else 'no reason given'})")
        yield ["nsenter", f"--target={holder.pid}", "--user", "--net"]
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            holder.kill()


def interfaces(pid: int) -> set[str]:
    """The network interfaces process ``pid`` sees."""
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]  # two header lines
    return {line.split(":")[0].strip() for line in lines}
