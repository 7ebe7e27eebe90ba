"""Content ids: CIDv1 (multiformats) of raw bytes, computed locally.

A CIDv1 is ``<version 1><codec><multihash>``, each number an unsigned varint; the multihash is
``<hash function code><digest length><digest>``. For a file's bytes we use the ``raw`` codec (``0x55``) and
sha2-256 (``0x12``, 32 bytes), and write the binary form in RFC 4648 base32, lower case, unpadded, behind the
multibase prefix ``b`` -- the form IPFS prints (``bafkrei...``), so a ModelPack shard's id is the id any IPFS
node would give the same bytes added as one raw block.
"""

from __future__ import annotations

import base64
import re

RAW_CODEC = 0x55
SHA2_256 = 0x12
CID_VERSION = 1
_CID_RE = re.compile(r"b[a-z2-7]+")


def varint(n: int) -> bytes:
    """Unsigned LEB128, the multiformats varint."""
    if n < 0:
        raise ValueError(f"a varint is unsigned, got {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def cid_from_sha256(digest: bytes | str) -> str:
    """The CIDv1 (raw, sha2-256, base32) of bytes whose sha256 is ``digest`` (32 bytes, or 64 hex digits)."""
    raw = bytes.fromhex(digest) if isinstance(digest, str) else digest
    if len(raw) != 32:
        raise ValueError(f"a sha256 digest is 32 bytes, got {len(raw)}")
    binary = varint(CID_VERSION) + varint(RAW_CODEC) + varint(SHA2_256) + varint(len(raw)) + raw
    return "b" + base64.b32encode(binary).decode("ascii").lower().rstrip("=")


def is_cid(text: str) -> bool:
    """Whether ``text`` has the shape of a base32 CID (a safe file name: ``b`` then ``[a-z2-7]``)."""
    return bool(_CID_RE.fullmatch(text))
