"""The man pages render with man -l, without warnings, and say the same
options as each program's --help."""

import os
import re
import shutil
import subprocess

import pytest

import wfs_testlib as lib

MAN = os.path.join(lib.BUILD, "man")
PAGES = ["weightfs.1", "weightfs-ctl.1", "weightfs-load.1", "weightfs-pack.1",
         "libweightfs.3"]

pytestmark = pytest.mark.skipif(shutil.which("man") is None,
                                reason="man not installed (Debian man-db)")


def render(page):
    r = subprocess.run(["man", "--warnings", "-l", os.path.join(MAN, page)],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MANWIDTH="100", MANPAGER="cat",
                                PAGER="cat", LC_ALL="C.UTF-8"))
    assert r.returncode == 0, r.stderr
    return r.stdout, r.stderr


@pytest.mark.parametrize("page", PAGES)
def test_renders(page):
    out, err = render(page)
    assert err.strip() == "", "groff warnings for %s:\n%s" % (page, err)
    assert "NAME" in out and "SYNOPSIS" in out
    assert "@VERSION@" not in out


def _help(binary):
    r = subprocess.run([binary, "--help"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0
    return r.stdout


def _o_options(text):
    """Names of -o options: "-o name" or "-o name=VALUE"."""
    return set(re.findall(r"-o ([a-z_]+)\b", text.replace("\u2010", "-")))


def _long_options(text):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text.replace(
        "\u2010", "-").replace("\u2212", "-")))


def _short_options(text):
    return set(re.findall(r"(?<![\w-])(-[a-zA-Z])\b", text.replace(
        "\u2010", "-").replace("\u2212", "-")))


def test_weightfs_help_and_man_agree():
    man, _ = render("weightfs.1")
    helptext = _help(lib.WEIGHTFS)
    h, m = _o_options(helptext), _o_options(man)
    assert h, "no -o options found in --help"
    assert h == m, "only in --help: %s; only in the man page: %s" % (
        sorted(h - m), sorted(m - h))
    for opt in ("-f", "-d", "-h", "-V"):
        assert opt in _short_options(man)
    assert _long_options(helptext) <= _long_options(man)


def test_weightfs_load_help_and_man_agree():
    man, _ = render("weightfs-load.1")
    helptext = _help(lib.WEIGHTFS_LOAD)
    h, m = _long_options(helptext), _long_options(man)
    assert len(h) > 5
    assert h == m, "only in --help: %s; only in the man page: %s" % (
        sorted(h - m), sorted(m - h))
    assert _short_options(helptext) == _short_options(man) or \
        _short_options(helptext) <= _short_options(man)


def test_weightfs_pack_help_and_man_agree():
    man, _ = render("weightfs-pack.1")
    helptext = _help(os.path.join(lib.BUILD, "tools", "weightfs-pack"))
    h, m = _long_options(helptext), _long_options(man)
    assert len(h) > 5
    assert h == m, "only in --help: %s; only in the man page: %s" % (
        sorted(h - m), sorted(m - h))
    assert _short_options(helptext) <= _short_options(man)


def test_weightfs_ctl_help_and_man_agree():
    man, _ = render("weightfs-ctl.1")
    helptext = _help(lib.WEIGHTFS_CTL)
    assert _long_options(helptext) == _long_options(man)
    for cmd in ("stats", "prefetch", "evict"):
        assert re.search(r"weightfs-ctl %s" % cmd, helptext)
        assert re.search(r"weightfs.ctl %s" % cmd, man)


def test_library_page_names_every_export():
    man, _ = render("libweightfs.3")
    header = open(os.path.join(lib.REPO, "include", "weightfs.h")).read()
    exported = set(re.findall(r"\b(wfs_[a-z_]+)\(", header))
    missing = [f for f in sorted(exported) if f not in man]
    assert not missing, "libweightfs(3) does not name %s" % missing
