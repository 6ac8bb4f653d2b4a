"""A deployment across a real network interface: SuperLink and SuperNodes in separate Linux network
namespaces joined by a veth pair, over TLS with node authentication (slow; needs root and iproute2).

The server namespace holds the SuperLink on 10.213.0.1; the device namespace holds two registered
SuperNodes, one unregistered SuperNode (refused) and the ``flwr`` CLI on 10.213.0.2. Nothing crosses
loopback between them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fedsec.results import read_metrics, read_summary
from simulations.processes import TAG_VARIABLE, kill_tagged

ROOT = Path(__file__).resolve().parents[2]
SERVER_IP, DEVICE_IP = "10.213.0.1", "10.213.0.2"
pytestmark = pytest.mark.slow


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture
def namespaces():
    """``(server, device)`` network namespaces joined by a veth pair; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (`ip`)")
    suffix = uuid.uuid4().hex[:6]
    server, device = f"fs-s-{suffix}", f"fs-d-{suffix}"
    try:
        sh("ip", "netns", "add", server)
        sh("ip", "netns", "add", device)
        sh("ip", "link", "add", f"vs{suffix}", "type", "veth", "peer", "name", f"vd{suffix}")
        for name, link, address in ((server, f"vs{suffix}", SERVER_IP), (device, f"vd{suffix}", DEVICE_IP)):
            sh("ip", "link", "set", link, "netns", name)
            sh("ip", "-n", name, "addr", "add", f"{address}/24", "dev", link)
            sh("ip", "-n", name, "link", "set", link, "up")
            sh("ip", "-n", name, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as error:
        for name in (server, device):
            sh("ip", "netns", "delete", name, check=False)
        pytest.skip(f"cannot make network namespaces here: {error.stderr.strip() or error}")
    yield server, device
    for name in (server, device):
        sh("ip", "netns", "delete", name, check=False)


@pytest.mark.extended
def test_a_tls_deployment_with_node_authentication_across_two_network_namespaces(namespaces, tmp_path):
    server, device = namespaces
    certs = tmp_path / "certs"
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "make_certificates.sh"), str(certs), "3"],
        env={**os.environ, "SUPERLINK_HOSTS": SERVER_IP},
        check=True,
        capture_output=True,
        timeout=120,
    )
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "lab"\n\n[superlink.lab]\naddress = "{SERVER_IP}:8000"\n'
        f'root-certificates = "{certs / "ca.crt"}"\n'
    )
    tag = uuid.uuid4().hex
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        TAG_VARIABLE: tag,
    }
    logs = tmp_path / "logs"
    logs.mkdir()

    def spawn(namespace: str, name: str, *command: str) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                ["ip", "netns", "exec", namespace, *command], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def in_device(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", device, *command],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    out = tmp_path / "records"
    try:
        spawn(
            server, "superlink", "flower-superlink", "--ssl-ca-certfile", str(certs / "ca.crt"),
            "--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile", str(certs / "server.key"),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            "--host", SERVER_IP, "--port", "8000",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while in_device("flwr", "supernode", "ls", "lab", "--format", "json", timeout=30).returncode != 0:
            assert time.monotonic() < deadline, (logs / "superlink.log").read_text()[-2000:]
            time.sleep(1)
        for index in range(2):  # the third key pair stays unregistered
            registered = in_device(
                "flwr", "supernode", "register", str(certs / f"supernode-{index}.pub"), "lab"
            )
            assert registered.returncode == 0, registered.stdout + registered.stderr
        for index in range(3):
            key = certs / f"supernode-{index}"
            spawn(
                device, f"supernode-{index}", "flower-supernode",
                "--root-certificates", str(certs / "ca.crt"), "--auth-supernode-private-key", str(key),
                "--superlink", f"{SERVER_IP}:8000", "--port", str(9094 + index),
                "--node-config", f"partition-id={min(index, 1)} num-partitions=2",
            )  # fmt: skip
        run = in_device(
            "flwr", "run", str(ROOT), "lab", "--stream", "--run-config",
            f"num-clients=2 num-server-rounds=2 local-epochs=1 out-dir='{out}'", timeout=600,
        )  # fmt: skip
    finally:
        kill_tagged(tag, grace=3.0)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = read_summary(out)
    assert summary["status"] == "completed" and summary["config"]["num-clients"] == 2
    assert [r["round"] for r in read_metrics(out)] == [0, 1, 2] and summary["final"]["accuracy"] > 0.6
    assert all(
        r["accepted"] == ["0", "1"] for r in read_metrics(out)[1:]
    )  # the unregistered node never took part
    refused = (logs / "supernode-2.log").read_text().lower()
    assert "failed to activate supernode" in refused, refused[-2000:]
