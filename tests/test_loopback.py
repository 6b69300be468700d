"""The namespace the server-starting tests run their commands in: loopback alone, shared by every
command given its prefix, unreachable from outside."""

import socket
import subprocess
import sys

import pytest
from loopback import interfaces, loopback_only

# Listens on every interface (as Ray's and torchrun's servers do), says its port, serves one client.
SERVER = """
import socket
with socket.create_server(("0.0.0.0", 0)) as server:
    print(server.getsockname()[1], flush=True)
    server.accept()[0].close()
"""


def test_a_server_on_every_interface_is_reachable_inside_the_namespace_alone():
    with loopback_only() as inside:
        server = subprocess.Popen([*inside, sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
        try:
            port = int(server.stdout.readline())
            assert interfaces(server.pid) == {"lo"}
            with pytest.raises(OSError):  # this process is outside: nothing listens on its loopback
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            client = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).close()"
            subprocess.run([*inside, sys.executable, "-c", client], check=True, timeout=60)
            assert server.wait(timeout=60) == 0
        finally:
            server.kill()
