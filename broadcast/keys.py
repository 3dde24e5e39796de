"""CURVE keypairs: generating, saving and loading them.

Every node has one long-term keypair; every authorised client has one too. A
key file holds both halves as Z85 text (40 characters each)::

    # paxos CURVE key: keep this file secret
    public = "..."
    secret = "..."

It is created with mode 0600 and refused if anyone but its owner can read it
(like ssh refuses a private key that is group- or world-readable): whoever
holds it speaks as that node or client. The public half alone goes into the
cluster file, where every node and client can read it.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from broadcast.spec import ConfigError
from broadcast.wal import fsync_dir

#: A CURVE key is 32 bytes, 40 characters of Z85.
KEY_BYTES = 32
KEY_TEXT_LEN = 40


@dataclass(frozen=True, slots=True)
class Keypair:
    """A CURVE keypair, both halves as Z85 bytes (what pyzmq's socket options take)."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> Keypair:
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @property
    def public_text(self) -> str:
        return self.public.decode("ascii")


def check_public_key(text: str, where: str) -> str:
    """``text`` if it is a Z85 CURVE public key, else a one-line ConfigError naming ``where``."""
    if not isinstance(text, str) or len(text) != KEY_TEXT_LEN:
        raise ConfigError(f"{where}: a key is {KEY_TEXT_LEN} characters of Z85")
    try:
        raw = z85.decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError, KeyError, IndexError):
        raise ConfigError(f"{where}: {text[:44]!r} is not a Z85 key") from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{where}: a key is {KEY_BYTES} bytes")
    return text


def raw_key(text: str | bytes) -> bytes:
    """The 32 bytes of a Z85 key (what ZAP requests carry)."""
    return z85.decode(text.encode("ascii") if isinstance(text, str) else text)


def save_keypair(path: Path, keypair: Keypair) -> None:
    """Write ``keypair`` to a new file ``path``, readable by its owner only.

    Refuses to overwrite: replacing a node's key silently would lock it out of
    its cluster (its peers know the old public key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# paxos CURVE key: keep this file secret\n"
        f'public = "{keypair.public.decode()}"\n'
        f'secret = "{keypair.secret.decode()}"\n'
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists already; not overwriting a key") from None
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)  # the name too: a node must not lose its key to a power cut


def load_keypair(path: Path) -> Keypair:
    """Read a key file; a one-line ConfigError if it is missing, damaged, or readable by
    others than its owner."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"key file {path} not found (paxos keys gen creates one; paxos cluster up "
            f"creates them all)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror or exc}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"chmod 600 it"
        )
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"key file {path}: cannot read it ({exc})") from None
    public = check_public_key(data.get("public", ""), f"key file {path}")
    secret = check_public_key(data.get("secret", ""), f"key file {path}")
    derived = zmq.curve_public(secret.encode())
    if derived != public.encode():
        raise ConfigError(f"key file {path}: its public key does not belong to its secret key")
    return Keypair(public.encode(), secret.encode())


def ensure_keypair(path: Path) -> Keypair:
    """The keypair in ``path``, created first if the file does not exist."""
    if not path.exists():
        save_keypair(path, Keypair.generate())
    return load_keypair(path)
