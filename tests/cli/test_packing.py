"""Packing a function directory: .funcignore (gitignore syntax), always-skipped dirs, determinism, and an
archive the portal's own checks accept with the same content hash."""

import pytest

from functions.sources.archives import inspect_archive
from hks_cli.errors import CliError
from hks_cli.packing import collect, is_ignored, pack, parse_ignore


def _tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "ignored"),
    [
        ("*.log", "debug.log", False, True),
        ("*.log", "deep/dir/debug.log", False, True),
        ("/build", "build", True, True),
        ("/build", "src/build", True, False),
        ("docs/", "docs", True, True),
        ("docs/", "docs", False, False),
        ("secret?.txt", "secret1.txt", False, True),
        ("a/**/z.txt", "a/b/c/z.txt", False, True),
        ("a/**/z.txt", "a/z.txt", False, True),
        ("src/*.js", "src/x/y.js", False, False),
    ],
)
def test_gitignore_patterns(pattern, path, is_dir, ignored):
    assert is_ignored(path, is_dir=is_dir, rules=parse_ignore(pattern)) is ignored


def test_negation_and_comments():
    rules = parse_ignore("# comment\n*.md\n!README.md\n")
    assert is_ignored("NOTES.md", is_dir=False, rules=rules)
    assert not is_ignored("README.md", is_dir=False, rules=rules)


def test_collect_honours_funcignore_and_always_skips_dependency_dirs(tmp_path):
    _tree(
        tmp_path,
        {
            "func.yaml": "name: f\nruntime: node\n",
            "index.js": "x",
            ".funcignore": "*.log\nfixtures/\n",
            "app.log": "noise",
            "fixtures/big.json": "{}",
            "node_modules/dep/index.js": "dep",
            ".git/HEAD": "ref",
            "__pycache__/x.pyc": "",
            ".venv/bin/python": "",
            "lib/util.js": "u",
        },
    )
    assert set(collect(tmp_path)) == {"func.yaml", "index.js", ".funcignore", "lib/util.js"}


def test_pack_is_deterministic_and_matches_the_portal_hash(tmp_path):
    _tree(tmp_path, {"func.yaml": "name: f\nruntime: python\n", "function/func.py": "def new(): ...\n"})
    first, digest = pack(tmp_path)
    (tmp_path / "function" / "func.py").touch()  # a new mtime changes nothing
    second, again = pack(tmp_path)
    assert first == second and digest == again
    assert inspect_archive(first).content_hash == digest


def test_pack_needs_func_yaml(tmp_path):
    with pytest.raises(CliError) as info:
        pack(tmp_path)
    assert info.value.code == 2
