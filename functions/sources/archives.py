"""Source archives are untrusted input: check everything before anything is stored.

An archive is a gzip-compressed tar of a function directory with ``func.yaml`` at its root. Refused with a
clear ``ArchiveError``: not a tar.gz, too big (compressed or unpacked - decompression is counted as it
happens, so a gzip bomb stops at the limit, and every member's declared size is added up before its data
is read, so a sparse member claiming a gigabyte costs nothing), too many members, names too long for a
file system, absolute paths, ``..``, sparse members, links (hard and symbolic), devices and anything else
that is not a regular file or a directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import posixpath
import tarfile
import zlib
from dataclasses import dataclass, field

from django.conf import settings

from functions.sources.funcyaml import FuncYamlError, load_func_yaml

MAX_NAME_BYTES = 255  # one path component, as ext4, XFS and tmpfs allow
MAX_PATH_BYTES = 1024


class ArchiveError(ValueError):
    """The archive was refused; the message says why, in words for the person who uploaded it."""


@dataclass
class ArchiveInfo:
    content_hash: str
    files: dict[str, bytes] = field(repr=False)
    func_yaml: dict
    size_bytes: int


class _CountingReader(io.RawIOBase):
    """Counts decompressed bytes and stops reading past ``limit``."""

    def __init__(self, raw, limit: int):
        self._raw = raw
        self._limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        self.count += len(data)
        if self.count > self._limit:
            raise ArchiveError(
                f"archive unpacks to more than {self._limit} bytes (the limit for source archives)"
            )
        buffer[: len(data)] = data
        return len(data)


def _check_name(name: str) -> str:
    if not name or "\x00" in name:
        raise ArchiveError("archive member with an empty or invalid name")
    shown = name[:60] + "..." if len(name) > 60 else name
    if len(name.encode()) > MAX_PATH_BYTES:
        raise ArchiveError(f"path {shown!r} is longer than {MAX_PATH_BYTES} bytes")
    if any(len(part.encode()) > MAX_NAME_BYTES for part in name.split("/")):
        raise ArchiveError(f"a file or directory name in {shown!r} is longer than {MAX_NAME_BYTES} bytes")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"absolute path in archive: {name!r}")
    normalized = posixpath.normpath(name)
    if normalized == ".." or normalized.startswith("../") or "/../" in f"/{name}/":
        raise ArchiveError(f"path escapes the function directory: {name!r}")
    return "" if normalized == "." else normalized


def _read_members(data: bytes) -> dict[str, bytes]:
    max_members = settings.HKS_MAX_ARCHIVE_MEMBERS
    limit = settings.HKS_MAX_UNPACKED_BYTES
    reader = _CountingReader(gzip.GzipFile(fileobj=io.BytesIO(data)), limit)
    files: dict[str, bytes] = {}
    declared = 0
    with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 16), mode="r|") as tar:
        for count, member in enumerate(tar, start=1):
            if count > max_members:
                raise ArchiveError(f"archive has more than {max_members} entries")
            name = _check_name(member.name)
            if member.isdir():
                continue
            if member.issparse() or member.type == tarfile.GNUTYPE_SPARSE:
                raise ArchiveError(f"{name!r} is a sparse file; only regular files are allowed")
            if not member.isreg():
                raise ArchiveError(f"{name!r} is a link or special file; only regular files are allowed")
            declared += member.size  # what it unpacks to, before a byte of it is read
            if declared > limit:
                raise ArchiveError(
                    f"archive unpacks to more than {limit} bytes (the limit for source archives)"
                )
            if name in files:
                raise ArchiveError(f"{member.name!r} appears twice in the archive")
            extracted = tar.extractfile(member)
            files[name] = extracted.read() if extracted else b""
    return files


def _content_hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def inspect_archive(data: bytes) -> ArchiveInfo:
    """Validate an uploaded archive and return its files, content hash and parsed ``func.yaml``."""
    limit = settings.HKS_MAX_ARCHIVE_BYTES
    if len(data) > limit:
        raise ArchiveError(f"archive is {len(data)} bytes; the limit is {limit}")
    if data[:2] != b"\x1f\x8b":
        raise ArchiveError("not a gzip-compressed tar archive (.tar.gz)")
    try:
        files = _read_members(data)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ArchiveError(f"archive is corrupt or truncated: {exc}") from exc
    if "func.yaml" not in files:
        raise ArchiveError("func.yaml is missing at the root of the archive")
    try:
        func_yaml = load_func_yaml(files["func.yaml"])
    except FuncYamlError as exc:
        raise ArchiveError(str(exc)) from exc
    return ArchiveInfo(
        content_hash=_content_hash(files), files=files, func_yaml=func_yaml, size_bytes=len(data)
    )


def pack_files(files: dict[str, bytes]) -> bytes:
    """A deterministic tar.gz of ``files`` (used by tests, the SDK's server side and templates)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w") as tar:
            for name in sorted(files):
                info = tarfile.TarInfo(name)
                info.size = len(files[name])
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()
