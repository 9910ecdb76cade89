"""Keys and certificates for a secured Flower deployment of fl-sim (docs/flower-runtime.md,
"Securing a deployment").

    python deploy/make_keys.py OUTDIR [--supernodes N] [--san NAME ...]

writes into OUTDIR (created, mode 0700; it must not hold any of these files already):

- ``ca.crt``: a self-signed certificate authority, the ``--ssl-ca-certfile`` of the SuperLink,
  the ``--root-certificates`` of the SuperNodes and ``flwr``'s ``root-certificates``. Its
  private key is not kept: nothing else can be signed with it later.
- ``server.pem``, ``server.key``: the SuperLink's TLS certificate (names: 127.0.0.1,
  localhost and every ``--san``) and private key.
- ``supernode-I.key``, ``supernode-I.pub`` for I in 0..N-1: each SuperNode's authentication
  key pair (ECDSA P-384, OpenSSH format, as Flower 1.42 reads them): the SuperNode takes
  the private key (``--auth-supernode-private-key``), the SuperLink learns the public one
  through ``flwr supernode register``.
- ``superexec.secret``: the shared secret with which the SuperExec authenticates to the
  SuperLink's Runtime API (``--superexec-auth-secret-file``).

Private keys and the secret are created with mode 0600. Self-signed keys like these are for
a loopback trial or a closed test network; a real deployment takes its certificates from
the organisation's own CA. Needs only the ``cryptography`` package (a dependency of flwr).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("127.0.0.1", "localhost")
VALID_DAYS = 365


class BadInput(Exception):
    """Reported as one line on stderr, exit status 2."""


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name or any(c.isspace() for c in name) or "/" in name:
        raise BadInput(f"--san {name!r} is neither an IP address nor a host name")
    return x509.DNSName(name)


def _certificate(subject: str, public_key, issuer: str, signing_key, *, ca: bool,
                 names: list[x509.GeneralName] = ()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               # a little slack for clocks that are behind
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = (builder
                   .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                                  critical=False))
    return builder.sign(signing_key, hashes.SHA256())


def _private_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_keys(outdir: Path, supernodes: int = 4, names: tuple[str, ...] = ()) -> dict[str, Path]:
    """Writes the files into ``outdir``; returns them by name."""
    if supernodes < 1:
        raise BadInput(f"--supernodes must be at least 1, not {supernodes}")
    alt_names = list(dict.fromkeys(_general_name(n) for n in (*DEFAULT_NAMES, *names)))

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = _certificate("fl-sim trial CA", ca_key.public_key(), "fl-sim trial CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = _certificate("fl-sim SuperLink", server_key.public_key(), "fl-sim trial CA", ca_key, ca=False,
                          names=alt_names)
    files: dict[str, tuple[bytes, bool]] = {   # name -> (content, private)
        "ca.crt": (ca.public_bytes(serialization.Encoding.PEM), False),
        "server.pem": (server.public_bytes(serialization.Encoding.PEM), False),
        "server.key": (_private_pem(server_key), True),
        # the file is read as raw bytes on both sides: text keeps it printable and copyable
        "superexec.secret": (secrets.token_hex(32).encode(), True),
    }
    for i in range(supernodes):
        # P-384 in OpenSSH format: what `flower-supernode --auth-supernode-private-key` and
        # `flwr supernode register` load (Flower's own docs use `ssh-keygen -t ecdsa -b 384`)
        key = ec.generate_private_key(ec.SECP384R1())
        files[f"supernode-{i}.key"] = (key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.OpenSSH,
                                                          serialization.NoEncryption()), True)
        files[f"supernode-{i}.pub"] = (key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                     serialization.PublicFormat.OpenSSH)
                                       + f" fl-sim-supernode-{i}\n".encode(), False)

    if outdir.exists() and not outdir.is_dir():
        raise BadInput(f"{outdir} exists and is not a directory")
    clash = sorted(n for n in files if (outdir / n).exists() or (outdir / n).is_symlink())
    if clash:
        # keys are never overwritten: a SuperLink may already trust them
        raise BadInput(f"{outdir} already holds {', '.join(clash)}: give a new directory")
    outdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = {}
    for name, (content, private) in files.items():
        path = outdir / name
        # O_EXCL: never follow a link or replace a file someone put there meanwhile; the mode
        # is set at creation, so a private key is never readable by others, even briefly
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        written[name] = path
    return written


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # one line, as every bad input to fl-sim (argparse would add its usage)
        self.exit(2, f"{self.prog}: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="make_keys.py", description="Self-signed TLS certificates, SuperNode key pairs and the SuperExec "
                                         "secret for a trial of a secured Flower deployment.")
    parser.add_argument("outdir", type=Path, help="a new or empty directory to write into")
    parser.add_argument("--supernodes", type=int, default=4, metavar="N",
                        help="SuperNode key pairs to make (default 4: one per participant)")
    parser.add_argument("--san", action="append", default=[], metavar="NAME",
                        help="another IP address or host name the SuperLink is reached at (besides 127.0.0.1 and "
                             "localhost); repeatable")
    args = parser.parse_args(argv)
    try:
        written = make_keys(args.outdir, args.supernodes, tuple(args.san))
    except BadInput as err:
        print(f"make_keys.py: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"make_keys.py: {err.strerror}: {err.filename}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files into {args.outdir}: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
