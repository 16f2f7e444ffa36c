"""Inputs that cost far more than their size are refused where they enter, in bounded time and memory.

Each attack is run in a fresh interpreter (tests/support/measure.py) so its peak memory is measured on its
own.
"""

import pytest

from functions.sources.archives import ArchiveError, inspect_archive, pack_files
from functions.sources.funcyaml import FuncYamlError, load_func_yaml
from functions.validators import ENV_MAX_COUNT, ENV_MAX_TOTAL_BYTES, ENV_MAX_VALUE_BYTES, check_env
from tests.support.archive_samples import ALIAS_BOMB, func_yaml, regular, sparse_archive, tar_gz
from tests.support.measure import measured

BOUNDED_KIB = 64 * 1024  # a refusal may not grow the process by more than 64 MiB


def test_a_sparse_member_claiming_a_gigabyte_is_refused_with_bounded_memory():
    archive = sparse_archive(1 << 30)
    assert len(archive) < 300  # a real attack: a few hundred bytes that claim 1 GiB
    result = measured("functions.sources.archives.inspect_archive", archive)
    assert result["outcome"].startswith("ArchiveError") and "sparse" in result["outcome"], result
    assert result["peak_growth_kib"] < BOUNDED_KIB, result


def test_a_yaml_alias_bomb_in_func_yaml_is_refused_with_bounded_memory():
    archive = pack_files({"func.yaml": ALIAS_BOMB, "index.js": b"x"})
    result = measured("functions.sources.archives.inspect_archive", archive)
    assert result["outcome"].startswith("ArchiveError") and "aliases" in result["outcome"], result
    assert result["peak_growth_kib"] < BOUNDED_KIB, result


def test_declared_member_sizes_count_against_the_unpacked_limit_before_reading(settings):
    settings.HKS_MAX_UNPACKED_BYTES = 1000
    archive = tar_gz(
        [regular("func.yaml", func_yaml()), regular("a.bin", bytes(600)), regular("b", bytes(600))]
    )
    with pytest.raises(ArchiveError, match="unpacks to more than 1000 bytes"):
        inspect_archive(archive)


@pytest.mark.parametrize(
    "name,reason",
    [("a" * 300 + ".js", "longer than 255 bytes"), ("d/" * 600 + "x.js", "longer than 1024 bytes")],
)
def test_names_no_file_system_can_hold_are_refused_without_host_paths(name, reason):
    with pytest.raises(ArchiveError, match=reason) as refused:
        inspect_archive(pack_files({"func.yaml": func_yaml(), name: b"x"}))
    assert "/work" not in str(refused.value) and len(str(refused.value)) < 300


@pytest.mark.parametrize(
    "document,reason",
    [
        (b"a: &a [*a]\n", "refers to itself"),
        (b"[" * 100 + b"]" * 100, "nested deeper"),
        (b"name: x\n" + b"#" * 70_000, "limit is 65536"),
        (b"- 1\n- 2\n", "must be a mapping"),
        (
            b"".join(b"k%d: &a%d 1\n" % (i, i) for i in range(150))
            + b"".join(b"v%d: *a%d\n" % (i, i) for i in range(150)),
            "aliases",
        ),
    ],
)
def test_func_yaml_documents_are_bounded(document, reason):
    with pytest.raises(FuncYamlError, match=reason):
        load_func_yaml(document)


def test_a_few_aliases_still_work():
    assert load_func_yaml(b"a: &x {k: 1}\nb: *x\n") == {"a": {"k": 1}, "b": {"k": 1}}


@pytest.mark.parametrize(
    "env,reason",
    [
        ({"A=B": "1"}, "not a valid environment variable name"),
        ({"A\x00B": "1"}, "not a valid environment variable name"),
        ({"1ABC": "1"}, "not a valid environment variable name"),
        ({"": "1"}, "not a valid environment variable name"),
        ({"A": "x\x00y"}, "NUL"),
        ({"A": "x" * (ENV_MAX_VALUE_BYTES + 1)}, "limit is"),
        ({f"V{i}": "1" for i in range(ENV_MAX_COUNT + 1)}, "environment variables; the limit"),
        ({f"V{i}": "x" * 30_000 for i in range(ENV_MAX_TOTAL_BYTES // 30_000 + 1)}, "in total"),
        ({"A": {"nested": 1}}, "text value"),
    ],
)
def test_env_rules(env, reason):
    with pytest.raises(ValueError, match=reason):
        check_env(env)


def test_a_normal_env_passes_and_values_become_text():
    assert check_env({"PORT_NAME": "x", "_N": 5, "EMPTY": None}) == {"PORT_NAME": "x", "_N": "5", "EMPTY": ""}
