"""Source archives for tests: a valid function, and hostile ones built the way an attacker would."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from functools import cache

from functions.sources.archives import pack_files

NODE_INDEX = b"module.exports = { handle: async (context, body) => 'OK' };\n"
PY_FUNC = b"def new():\n    return None\n"


def func_yaml(name: str = "hello", runtime: str = "node", extra: str = "") -> bytes:
    header = f"specVersion: 0.36.0\nname: {name}\nruntime: {runtime}\n"
    return f"{header}created: 2026-11-25T00:00:00Z\n{extra}".encode()


def node_archive(name: str = "hello", *, body: bytes = NODE_INDEX, extra: str = "") -> bytes:
    return pack_files({"func.yaml": func_yaml(name, "node", extra), "index.js": body})


def python_archive(name: str = "hello") -> bytes:
    return pack_files({"func.yaml": func_yaml(name, "python"), "function/func.py": PY_FUNC})


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A tar.gz holding exactly these headers (links, devices, odd names included)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null
    return info, None


def with_func_yaml(*members) -> bytes:
    return tar_gz([regular("func.yaml", func_yaml()), *members])


@cache
def gzip_bomb(unpacked_bytes: int = 200 * 1024 * 1024) -> bytes:
    """A valid func.yaml, then one file of zeros: ``unpacked_bytes`` compress to about a thousandth."""
    header = tarfile.TarInfo("zeros.bin")
    header.size = unpacked_bytes
    func = io.BytesIO()
    with tarfile.open(fileobj=func, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = func_yaml()
        info = tarfile.TarInfo("func.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    head = func.getvalue()[: -tarfile.RECORDSIZE]  # drop the end-of-archive blocks
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    out = [compressor.compress(head), compressor.compress(header.tobuf(format=tarfile.USTAR_FORMAT))]
    chunk = bytes(1024 * 1024)
    for _ in range(unpacked_bytes // len(chunk)):
        out.append(compressor.compress(chunk))
    out.append(compressor.compress(bytes(unpacked_bytes % len(chunk) + tarfile.RECORDSIZE)))
    out.append(compressor.flush())
    return b"".join(out)


HOSTILE = {
    # name: (archive bytes, words the refusal must contain)
    "path traversal": (lambda: with_func_yaml(regular("../evil.js", b"x")), "escapes"),
    "nested traversal": (lambda: with_func_yaml(regular("src/../../evil.js", b"x")), "escapes"),
    "absolute path": (lambda: with_func_yaml(regular("/etc/cron.d/evil", b"x")), "absolute path"),
    "symlink out": (lambda: with_func_yaml(special("link", tarfile.SYMTYPE, "/etc/passwd")), "link"),
    "hardlink": (lambda: with_func_yaml(special("hard", tarfile.LNKTYPE, "func.yaml")), "link"),
    "character device": (lambda: with_func_yaml(special("null", tarfile.CHRTYPE)), "special file"),
    "fifo": (lambda: with_func_yaml(special("pipe", tarfile.FIFOTYPE)), "special file"),
    "gzip bomb": (gzip_bomb, "unpacks to more than"),
    "not gzip": (lambda: b"PK\x03\x04 this is a zip file, not a tar.gz", "not a gzip"),
    "plain tar": (lambda: _plain_tar(), "not a gzip"),
    "truncated": (lambda: node_archive(body=bytes(range(256)) * 64)[:-200], "corrupt or truncated"),
    "missing func.yaml": (lambda: pack_files({"index.js": NODE_INDEX}), "func.yaml is missing"),
    "func.yaml not yaml": (lambda: pack_files({"func.yaml": b"name: [unclosed"}), "not valid YAML"),
    "duplicate member": (
        lambda: with_func_yaml(regular("index.js", b"a"), regular("index.js", b"b")),
        "appears twice",
    ),
}


def _plain_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = func_yaml()
        info = tarfile.TarInfo("func.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _gnu_checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)


def sparse_archive(claimed_bytes: int = 1 << 30) -> bytes:
    """A valid func.yaml, then an old-style GNU sparse member ('S') that stores no data at all and claims to
    unpack to ``claimed_bytes`` of holes - the whole archive is under 200 bytes once compressed."""
    info = tarfile.TarInfo("hole.bin")
    info.size = 0
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:398] = b"%011o\0" % (claimed_bytes - 1)  # one sparse entry: 1 byte at the very end...
    header[398:410] = b"%011o\0" % 0  # ...of length 0: all holes
    header[482] = 0  # no extended sparse headers
    header[483:495] = b"%011o\0" % claimed_bytes  # the real (unpacked) size
    _gnu_checksum(header)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        data = func_yaml()
        yaml_info = tarfile.TarInfo("func.yaml")
        yaml_info.size = len(data)
        tar.addfile(yaml_info, io.BytesIO(data))
        end = tar.offset  # where the end-of-archive blocks start
    raw = buffer.getvalue()[:end] + bytes(header) + bytes(2 * tarfile.BLOCKSIZE)
    return gzip.compress(raw, compresslevel=9, mtime=0)


ALIAS_BOMB = b"""specVersion: 0.36.0
name: hello
runtime: node
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""
