"""Untrusted source archives: what is accepted, and each way of attacking the unpacker is refused."""

import os

import pytest

from functions.sources.archives import ArchiveError, inspect_archive, pack_files
from tests.support.archive_samples import HOSTILE, func_yaml, gzip_bomb, node_archive, regular, tar_gz


def test_a_function_archive_is_read_with_its_files_and_func_yaml():
    info = inspect_archive(node_archive())
    assert sorted(info.files) == ["func.yaml", "index.js"]
    assert info.func_yaml["runtime"] == "node"
    assert info.size_bytes == len(node_archive())


def test_content_hash_depends_on_content_not_on_packing():
    same = pack_files({"index.js": b"1", "func.yaml": func_yaml()})
    dotted = tar_gz([regular("./func.yaml", func_yaml()), regular("./index.js", b"1")])
    changed = pack_files({"index.js": b"2", "func.yaml": func_yaml()})
    assert inspect_archive(same).content_hash == inspect_archive(dotted).content_hash
    assert inspect_archive(same).content_hash != inspect_archive(changed).content_hash


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archive_is_refused_with_the_reason(kind):
    build, reason = HOSTILE[kind]
    with pytest.raises(ArchiveError, match=reason):
        inspect_archive(build())


def test_gzip_bomb_is_small_on_the_wire_and_stops_at_the_unpacked_limit(settings):
    settings.HKS_MAX_UNPACKED_BYTES = 10 * 1024 * 1024
    bomb = gzip_bomb()
    assert len(bomb) < 1024 * 1024  # it is a real bomb: 200 MB of zeros in well under 1 MB
    with pytest.raises(ArchiveError, match=f"more than {10 * 1024 * 1024} bytes"):
        inspect_archive(bomb)


def test_archive_over_the_upload_limit_is_refused_before_unpacking(settings):
    settings.HKS_MAX_ARCHIVE_BYTES = 1000
    with pytest.raises(ArchiveError, match="the limit is 1000"):
        inspect_archive(node_archive(body=os.urandom(5000)))


def test_too_many_members_are_refused(settings):
    settings.HKS_MAX_ARCHIVE_MEMBERS = 10
    files = {f"lib/{i}.js": b"//" for i in range(20)} | {"func.yaml": func_yaml()}
    with pytest.raises(ArchiveError, match="more than 10 entries"):
        inspect_archive(pack_files(files))


def test_directories_are_allowed():
    import tarfile

    directory = tarfile.TarInfo("lib")
    directory.type = tarfile.DIRTYPE
    archive = tar_gz([regular("func.yaml", func_yaml()), (directory, None), regular("lib/a.js", b"a")])
    assert sorted(inspect_archive(archive).files) == ["func.yaml", "lib/a.js"]


def test_func_yaml_timestamps_become_strings_that_can_be_stored_as_json():
    info = inspect_archive(node_archive())
    assert info.func_yaml["created"] == "2026-11-25T00:00:00+00:00"
