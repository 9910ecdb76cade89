"""The secured Flower deployment (docs/flower-runtime.md, "Securing a deployment"):
``deploy/make_keys.py`` makes the certificates and keys; a SuperLink with TLS, SuperNode
authentication and an authenticated SuperExec runs the fl-sim app with 4 registered
SuperNodes, and refuses SuperNodes whose keys were not registered.

Processes are started and stopped as in tests/test_flower_runtime.py (whose helpers these
tests use), on loopback, with FLWR_HOME a temporary directory.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_flower_runtime import (
    BIN,
    PARTICIPANTS,
    Processes,
    _start_superlink,
    _start_supernodes,
    flower_env,
    free_port,
    run_app_and_check,
    write_tiny_config,
)

MAKE_KEYS = REPO / "deploy" / "make_keys.py"
PRIVATE = {"server.key", "superexec.secret"} | {f"supernode-{i}.key" for i in range(PARTICIPANTS + 1)}
PUBLIC = {"ca.crt", "server.pem"} | {f"supernode-{i}.pub" for i in range(PARTICIPANTS + 1)}


def make_keys(outdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(MAKE_KEYS), str(outdir), *args], capture_output=True, text=True,
                          timeout=120)


# ---------------------------------------------------------------- fast tests
@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # click's, inside typer, inside flwr's CLI
def test_make_keys_writes_what_flower_reads_into_outdir_only(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    keys = tmp_path / "keys"
    done = make_keys(keys, "--supernodes", str(PARTICIPANTS + 1), "--san", "superlink.example", "--san", "10.1.2.3")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert list(tmp_path.iterdir()) == [keys]                       # nothing beside OUTDIR
    assert {p.name for p in keys.iterdir()} == PRIVATE | PUBLIC
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in PRIVATE:
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600, name

    # the server certificate is the CA's, for the loopback names and the asked ones
    ca = x509.load_pem_x509_certificate((keys / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((keys / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.1.2.3"}
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "superlink.example"}
    # each SuperNode's private key is what flower-supernode loads, its public key what
    # `flwr supernode register` loads, and the two belong together; every pair is new
    seen = set()
    for i in range(PARTICIPANTS + 1):
        private = load_ssh_private_key((keys / f"supernode-{i}.key").read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        public = try_load_public_key(keys / f"supernode-{i}.pub")
        assert public == public_key_to_bytes(private.public_key())
        seen.add(public)
    assert len(seen) == PARTICIPANTS + 1
    assert len((keys / "superexec.secret").read_bytes()) >= 32

    # keys are never overwritten; bad input is one line and status 2
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    for args, message in (([], "already holds"), (["--supernodes", "0"], "at least 1"),
                          (["--san", "a b"], "neither an IP address nor a host name"), (["--bogus"], "unrecognized")):
        again = make_keys(tmp_path / "other" if args else keys, *args)
        assert again.returncode == 2, (args, again.stderr)
        assert again.stderr.count("\n") == 1 and message in again.stderr, again.stderr
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == before
    assert not (tmp_path / "other").exists()


@pytest.mark.timeout(120)
def test_the_open_source_superlink_has_no_control_api_authentication(tmp_path):
    """What docs/flower-runtime.md states: in flwr 1.42 the Control API's account
    authentication (OIDC) is Flower Enterprise's; the open-source SuperLink refuses to start
    when asked for it. Fails, and the doc is to be reread, when a release changes that."""
    done = subprocess.run(
        [BIN / "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(free_port(set()))],
        env=flower_env(tmp_path / "flwr-home", FLWR_OIDC_ENABLED="1"), cwd=tmp_path, capture_output=True, text=True,
        timeout=100)
    assert done.returncode != 0
    assert "OIDC account authentication is unavailable in this Flower distribution" in done.stdout + done.stderr


# ---------------------------------------------------------------- the secured deployment
@pytest.mark.ray
@pytest.mark.timeout(900)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the processes it started in /proc")
def test_secured_deployment_runs_the_app_over_tls_and_refuses_unregistered_supernodes(tmp_path):
    """SuperLink with TLS, ``--enable-supernode-auth`` and its SuperExec authenticated by the
    shared secret (``--isolation process``); the 4 participants' public keys registered with
    ``flwr supernode register``; a SuperNode with a key the SuperLink does not know and one
    with no key are refused and exit; ``flwr run`` over TLS (the CA in the connection) runs
    the tiny config to the end on the 4 registered SuperNodes."""
    import ssl

    import httpx

    t0 = time.monotonic()
    home, run_dir, keys, taken = tmp_path / "flwr-home", tmp_path / "run", tmp_path / "keys", set()
    home.mkdir()
    made = make_keys(keys, "--supernodes", str(PARTICIPANTS + 1))   # the last one is never registered
    assert made.returncode == 0, made.stderr
    config = write_tiny_config(tmp_path)
    procs = Processes(tmp_path, flower_env(home))
    try:
        port = _start_superlink(procs, taken, ca=keys / "ca.crt", security=(
            "--ssl-ca-certfile", keys / "ca.crt", "--ssl-certfile", keys / "server.pem",
            "--ssl-keyfile", keys / "server.key", "--enable-supernode-auth",
            "--isolation", "process", "--superexec-auth-secret-file", keys / "superexec.secret"))
        address = f"127.0.0.1:{port}"
        procs.start("superexec", [BIN / "flower-superexec", "--runtime-api-address", address,
                                  "--root-certificates", keys / "ca.crt",
                                  "--superexec-auth-secret-file", keys / "superexec.secret"])
        # TLS only, and the Runtime API refuses a caller without the SuperExec's secret
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{address}/health", timeout=5)
        tls = ssl.create_default_context(cafile=str(keys / "ca.crt"))
        stranger = httpx.post(f"https://{address}/v1/runtime/acquire-task", content=b"", timeout=10, verify=tls,
                              headers={"content-type": "application/protobuf"})
        assert stranger.status_code == 401, (stranger.status_code, stranger.text)

        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "secure"\n\n[superlink.secure]\n'
            f'address = "{address}"\nroot-certificates = "{keys / "ca.crt"}"\n')
        for i in range(PARTICIPANTS):
            reg = procs.start(f"register-{i}", [BIN / "flwr", "supernode", "register", keys / f"supernode-{i}.pub",
                                                "secure"])
            assert reg.wait(timeout=120) == 0 and "registered successfully" in procs.log(f"register-{i}").read_text(), \
                procs.tails()

        # the refused: a key the SuperLink does not know (a SuperNode with a key only asks to be
        # activated), and none (it makes one up and registers itself: what --enable-supernode-auth stops)
        refused = {"unregistered": ["--auth-supernode-private-key", keys / f"supernode-{PARTICIPANTS}.key"],
                   "keyless": []}
        for name, key in refused.items():
            procs.start(name, [BIN / "flower-supernode", "--superlink", address, "--root-certificates",
                               keys / "ca.crt", *key, "--node-config", f"partition-id=0 num-partitions={PARTICIPANTS}",
                               "--host", "127.0.0.1", "--port", free_port(taken)])
        _start_supernodes(procs, port, taken, security=lambda i: [
            "--root-certificates", keys / "ca.crt", "--auth-supernode-private-key", keys / f"supernode-{i}.key"])
        for name, why in (("unregistered", "Failed to activate SuperNode"),
                          ("keyless", "All SuperNodes must be registered via the CLI")):
            try:
                code = procs.popen[name].wait(timeout=120)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {name} SuperNode was not refused\n{procs.tails()}")
            log = procs.log(name).read_text(errors="replace")
            # 305: Flower's "SuperNode could not connect to the SuperLink" (the status is 1)
            assert code == 1 and "Exit Code: 305" in log and why in log and "SuperNode ID:" not in log, procs.tails()

        # 2 rounds on exactly the 4 registered participants (one node more would have failed the run)
        run_app_and_check(procs, "secure", config, run_dir)
    finally:
        left = procs.stop()
        assert not left, f"processes survived: {sorted(left)}"
    print(f"secured Flower deployment: {time.monotonic() - t0:.0f} s")
