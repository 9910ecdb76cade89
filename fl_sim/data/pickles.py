"""Pickled data files (CIFAR's python format) are unpickled only when their checksum is known.

Unpickling runs whatever code the file names, so a data root or a config from someone else
must never be able to make fl-sim unpickle a file of their choosing. A file is read when

- it is byte for byte the official file: its MD5 is the one torchvision publishes for it
  (MD5 is broken for collisions, not for matching a given digest); or
- the user vouches for it: its SHA-256 is listed in the file that ``$FL_SIM_TRUSTED_SHA256``
  names, in ``sha256sum``'s format (``sha256sum cifar-10-batches-py/* > trusted.sha256``).

Only the environment of the process can vouch. Nothing in a config can: a run directory's
config.yaml may come from elsewhere (``fl-sim run --resume``, ``fl-sim attack``), and it
names the data root too. There is no switch that turns the check off.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from .cache import one_line

TRUST_ENV = "FL_SIM_TRUSTED_SHA256"
_DIGEST = re.compile(r"\\?([0-9a-fA-F]{64})(?:\s|$)")   # sha256sum prefixes "\" to escaped names

# what a truncated or foreign pickle raises while being read
PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError,
                 AttributeError, IndexError, ImportError, OSError)


def vouched_sha256() -> set[str]:
    """The SHA-256 digests listed in the file ``$FL_SIM_TRUSTED_SHA256`` names (none if unset)."""
    where = os.environ.get(TRUST_ENV, "").strip()
    if not where:
        return set()
    try:
        text = Path(where).expanduser().read_text(errors="replace")
    except OSError as e:
        raise DataError(one_line(f"${TRUST_ENV}={where}: cannot read it ({e.strerror or e})")) from None
    return {m[1].lower() for line in text.splitlines() if (m := _DIGEST.match(line.strip()))}


def trusted_pickle(path: Path, official_md5: str, err: Callable[[str], DataError]) -> object:
    """Unpickle ``path`` (as torchvision does, latin-1 for Python 2 strings) when it is the
    official file or one the user vouches for; otherwise a one-line DataError, and the file
    is never unpickled. The bytes checked are the bytes unpickled."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise err(f"cannot read {path.name} ({e.strerror or e}) in") from None
    if (hashlib.md5(data, usedforsecurity=False).hexdigest() != official_md5
            and hashlib.sha256(data).hexdigest() not in vouched_sha256()):
        raise err(f"{path.name} is a pickle (reading it can run code) that is not the official file "
                  f"(its MD5 differs) and whose SHA-256 is not vouched for in ${TRUST_ENV}: "
                  f"not read; to use a copy you trust, list sha256sum's output for it in a file "
                  f"and set ${TRUST_ENV} to that file; in")
    try:
        return pickle.loads(data, encoding="latin1")
    except PICKLE_ERRORS as e:
        raise err(f"truncated or malformed batch file {path.name} ({type(e).__name__}: {one_line(e)}) in") from None
