"""Sealed files: checkpoints encrypted at rest with AES-256-GCM, in authenticated chunks.

`llmos boot --encrypt-storage` makes model_save write checkpoints in this
format and model_load open them; the cipher is the `cryptography` package's
AESGCM (an authenticated cipher: a changed byte fails, it never decrypts to
garbage). Layout (docs/security.md says the same):

    header   MAGIC (8 bytes) | file id (16 random bytes) | chunk size (4 bytes, big endian)
    chunk i  nonce (12 random bytes) | AES-GCM ciphertext of the plain bytes | tag (16 bytes)

Every chunk holds `chunk size` plain bytes but the last, which holds the rest
(maybe none). Each chunk's associated data is the header, its index (8 bytes)
and a final flag (1 byte, set on the last chunk only), so a chunk moved
within the file or from another file, a file cut short (even at a chunk
boundary: its new last chunk was not sealed as final) or one with chunks
appended fails authentication. Chunks let a reader check a file as it
reads it and let the kernel open only the first chunk to read a checkpoint's
header.

The key is 32 random bytes, kept as 64 hex digits in a file only its owner
may read (0600; `load_key` refuses a key file others can read).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"LLMSEAL1"
HEADER = len(MAGIC) + 16 + 4
"""Bytes of the header."""
NONCE = 12
TAG = 16
CHUNK = 1 << 20
"""Plain bytes per chunk."""
KEY_BYTES = 32


class AuthError(ValueError):
    """A sealed file failed authentication: tampered, truncated, extended, or sealed under another key."""

    def __init__(self, detail: str):
        super().__init__(f"checkpoint failed authentication: {detail}")


def is_sealed(path: str) -> bool:
    """Whether the file at `path` starts like a sealed file (a folder or a short file is not)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except (IsADirectoryError, FileNotFoundError):
        return False


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def write(path: str, data, key: bytes, chunk: int = CHUNK) -> str:
    """Seal `data` (bytes-like) into `path`, atomically (a temporary name, then a rename); return the
    SHA-256 (hex) of the file written."""
    aes = AESGCM(key)
    header = MAGIC + secrets.token_bytes(16) + chunk.to_bytes(4, "big")
    view = memoryview(data).cast("B")
    digest = hashlib.sha256(header)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            count = max(1, -(-len(view) // chunk))
            for index in range(count):
                nonce = secrets.token_bytes(NONCE)
                piece = nonce + aes.encrypt(nonce, view[index * chunk : (index + 1) * chunk], _aad(header, index, index == count - 1))
                digest.update(piece)
                f.write(piece)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return digest.hexdigest()


def chunks(path: str, key: bytes) -> Iterator[bytes]:
    """The plain bytes of the sealed file at `path`, chunk by chunk, each authenticated before it is
    yielded; AuthError at the first chunk that fails (or a file cut short or not sealed)."""
    aes = AESGCM(key)
    with open(path, "rb") as f:
        header = f.read(HEADER)
        if len(header) < HEADER or header[: len(MAGIC)] != MAGIC:
            raise AuthError("not a sealed file (or cut short in its header)")
        size = int.from_bytes(header[-4:], "big")
        if not 0 < size <= 1 << 30:
            raise AuthError(f"its header names a chunk size of {size} bytes")
        full = NONCE + size + TAG
        block, index = f.read(full), 0
        while True:
            ahead = f.read(full) if len(block) == full else b""
            final = not ahead
            if len(block) < NONCE + TAG:
                raise AuthError(f"chunk {index} is cut short")
            try:
                yield aes.decrypt(block[:NONCE], block[NONCE:], _aad(header, index, final))
            except InvalidTag:
                raise AuthError(f"chunk {index} was changed, cut short, moved or sealed under another key") from None
            if final:
                return
            block, index = ahead, index + 1


def read(path: str, key: bytes) -> bytes:
    """The whole plain content of the sealed file at `path` (AuthError if any chunk fails)."""
    return b"".join(chunks(path, key))


def read_prefix(path: str, key: bytes, nbytes: int) -> bytes:
    """At least the first `nbytes` plain bytes (fewer only if the file holds fewer), opening only the
    chunks that hold them."""
    out = bytearray()
    for piece in chunks(path, key):
        out += piece
        if len(out) >= nbytes:
            break
    return bytes(out)


def new_key() -> bytes:
    """A fresh random key."""
    return secrets.token_bytes(KEY_BYTES)


def load_key(path: str, create: bool = False) -> bytes:
    """The key in the file at `path` (64 hex digits); with `create`, write a new one (0600) if there is none.

    ValueError for a file that is not a key, or that others than its owner may read.
    """
    if create and not os.path.exists(path):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another kernel made it meanwhile: read that one
        else:
            with os.fdopen(fd, "w") as f:
                f.write(new_key().hex() + "\n")
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"the key file {path} may be read by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    with open(path) as f:
        text = f.read().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path} does not hold a key ({KEY_BYTES * 2} hex digits)")
    return key
