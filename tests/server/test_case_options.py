"""Samba's name-case options (`case sensitive`, `preserve case`, `short preserve case`,
`default case`), and a rename or link that meets a file of the same name in another case.
Samba's smbclient against `smbring serve --config`, files checked on disk.

Each test holds a default share beside the configured one where the behaviour differs, so
that an option the server ignored would fail it."""
import pytest

from smbconf_server import smbconf  # noqa: F401  (the fixture)
from smbring.server.config import ConfigError, load

RECIPE = "case sensitive = yes\npreserve case = no\nshort preserve case = no"


def started(smbconf, options: str):
    server = smbconf("", {"plain": "read only = no", "cased": f"read only = no\n{options}"})
    return server, server.root / "plain", server.root / "cased"


def ok(done):
    assert done.returncode == 0 and "NT_STATUS_" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def test_case_sensitive_reaches_only_the_name_spelled_so(smbconf, tmp_path):
    """`case sensitive = yes`: REPORT.TXT is not Report.txt (NOT_FOUND, where the default share
    finds it), a new NEW.txt is a second file beside new.txt, and a listing's pattern matches
    as spelled."""
    server, plain, cased = started(smbconf, "case sensitive = yes")
    for share in (plain, cased):
        (share / "Report.txt").write_bytes(b"report\n")
        (share / "new.txt").write_bytes(b"old\n")
    (tmp_path / "up").write_bytes(b"up\n")
    ok(server.smbclient("plain", f"get REPORT.TXT {tmp_path / 'got'}"))
    assert (tmp_path / "got").read_bytes() == b"report\n"
    missed = server.smbclient("cased", f"get REPORT.TXT {tmp_path / 'got2'}")
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in missed.stdout + missed.stderr, missed.stdout
    ok(server.smbclient("cased", f"get Report.txt {tmp_path / 'got3'}"))
    for share in ("plain", "cased"):
        ok(server.smbclient(share, f"put {tmp_path / 'up'} NEW.txt"))
    assert sorted(p.name for p in plain.iterdir()) == ["Report.txt", "new.txt"]
    assert (plain / "new.txt").read_bytes() == b"up\n"         # the one file, overwritten
    assert sorted(p.name for p in cased.iterdir()) == ["NEW.txt", "Report.txt", "new.txt"]
    assert (cased / "new.txt").read_bytes() == b"old\n"
    assert "Report.txt" in ok(server.smbclient("plain", "ls *.TXT")).stdout
    listed = server.smbclient("cased", "ls *.TXT")
    assert "Report.txt" not in listed.stdout and "NT_STATUS_NO_SUCH_FILE" in listed.stdout + listed.stderr
    assert "Report.txt" in ok(server.smbclient("cased", "ls *.txt")).stdout


def test_samba_large_directory_recipe_stores_and_finds_names_in_lower_case(smbconf, tmp_path):
    """`case sensitive = yes`, `preserve case = no`, `short preserve case = no`: new files,
    directories and rename targets are made in lower case, and a name in any case reaches
    them (every name sent is lower-cased first); the default share keeps the case given."""
    server, plain, cased = started(smbconf, RECIPE)
    (tmp_path / "up").write_bytes(b"data\n")
    for share in ("plain", "cased"):
        ok(server.smbclient(share, f"put {tmp_path / 'up'} \"Quarterly Report.TXT\"; mkdir NewDir; "
                                   f"put {tmp_path / 'up'} NewDir\\Inner.DOC; "
                                   "rename NewDir\\Inner.DOC NewDir\\Final.Doc"))
    assert sorted(p.name for p in plain.iterdir()) == ["NewDir", "Quarterly Report.TXT"]
    assert [p.name for p in (plain / "NewDir").iterdir()] == ["Final.Doc"]
    assert sorted(p.name for p in cased.iterdir()) == ["newdir", "quarterly report.txt"]
    assert [p.name for p in (cased / "newdir").iterdir()] == ["final.doc"]
    ok(server.smbclient("cased", f"get \"QUARTERLY report.txt\" {tmp_path / 'got'}"))
    assert (tmp_path / "got").read_bytes() == b"data\n"
    ok(server.smbclient("cased", f"get NEWDIR\\FINAL.DOC {tmp_path / 'got2'}"))
    # a file made on the server in another case is not reached by its own spelling
    (cased / "Mixed.txt").write_bytes(b"x")
    missed = server.smbclient("cased", f"get Mixed.txt {tmp_path / 'got3'}")
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in missed.stdout + missed.stderr, missed.stdout


def test_default_case_upper_and_short_preserve_case(smbconf, tmp_path):
    """Names still case-insensitive. `preserve case = no`, `default case = upper`: every new
    name is upper-cased, 8.3 ones too (as Samba). `short preserve case = no` alone: 8.3 names
    are, long names keep their case. An existing file is reached in any case and keeps its
    name when overwritten."""
    server = smbconf("", {"all": "read only = no\npreserve case = no\ndefault case = upper",
                          "short": "read only = no\nshort preserve case = no\ndefault case = upper"})
    (tmp_path / "up").write_bytes(b"data\n")
    for share in ("all", "short"):
        (server.root / share / "kept.txt").write_bytes(b"old\n")
        ok(server.smbclient(share, f"put {tmp_path / 'up'} \"long mixed Name.text\"; "
                                   f"put {tmp_path / 'up'} Short.Txt; put {tmp_path / 'up'} KEPT.TXT"))
        assert (server.root / share / "kept.txt").read_bytes() == b"data\n"
    assert sorted(p.name for p in (server.root / "all").iterdir()) == \
        ["LONG MIXED NAME.TEXT", "SHORT.TXT", "kept.txt"]
    assert sorted(p.name for p in (server.root / "short").iterdir()) == \
        ["SHORT.TXT", "kept.txt", "long mixed Name.text"]


def test_a_rename_onto_a_name_in_another_case_meets_that_file(smbconf, tmp_path):
    """On the default (case-insensitive) share, a rename to FOO.TXT where foo.txt exists is
    a collision (never a second file differing only in case), replaces foo.txt with -f, and a
    rename of a file to its own name in another case changes its case."""
    server, plain, _cased = started(smbconf, "")
    (plain / "a.txt").write_bytes(b"a\n")
    (plain / "foo.txt").write_bytes(b"foo\n")
    refused = server.smbclient("plain", "rename a.txt FOO.TXT")
    assert "NT_STATUS_OBJECT_NAME_COLLISION" in refused.stdout + refused.stderr, refused.stdout
    assert sorted(p.name for p in plain.iterdir()) == ["a.txt", "foo.txt"]
    ok(server.smbclient("plain", "rename a.txt FOO.TXT -f"))
    assert sorted(p.name for p in plain.iterdir()) == ["foo.txt"]
    assert (plain / "foo.txt").read_bytes() == b"a\n"
    ok(server.smbclient("plain", "rename foo.txt Foo.Txt"))
    assert sorted(p.name for p in plain.iterdir()) == ["Foo.Txt"]
    (plain / "b.txt").write_bytes(b"b\n")
    linked = server.smbclient("plain", "hardlink b.txt FOO.TXT")
    assert "NT_STATUS_OBJECT_NAME_COLLISION" in linked.stdout + linked.stderr, linked.stdout
    assert sorted(p.name for p in plain.iterdir()) == ["Foo.Txt", "b.txt"]
    # a link to a name the file has already, in another case: nothing made (a name of it)
    ok(server.smbclient("plain", "hardlink b.txt B.TXT"))
    assert sorted(p.name for p in plain.iterdir()) == ["Foo.Txt", "b.txt"]


@pytest.mark.parametrize("line, message", [("default case = middle", "default case"),
                                           ("case sensitive = sometimes", "case sensitive"),
                                           ("preserve case = perhaps", "expected yes or no")])
def test_bad_case_options_stop_the_server(tmp_path, line, message):
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[s]\npath = {tmp_path}\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load(str(conf))


def test_case_options_are_read_per_share_with_global_defaults(tmp_path):
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\ncase sensitive = yes\n[a]\npath = {tmp_path}\n"
                    f"[b]\npath = {tmp_path}\ncasesignames = auto\ndefault case = UPPER\n"
                    f"[c]\npath = {tmp_path}\n{RECIPE}\n")
    shares = load(str(conf)).shares
    assert shares["a"].case_sensitive and not shares["b"].case_sensitive
    assert shares["b"].default_case == "upper" and shares["a"].default_case == "lower"
    assert (shares["c"].preserve_case, shares["c"].short_preserve_case) == (False, False)
    assert not any("case" in w for w in load(str(conf)).warnings)


def test_case_rules_open_no_way_around_veto_files_or_the_stream_depot(smbconf, tmp_path):
    """On a `case sensitive` share, and on one whose names are put in lower case first, a
    vetoed name is not reached in another case (veto files compare without case whatever
    the share says), and the stream depot is not reached by a spelling that folds to it."""
    from smbring.vfs.api import STREAMS_DIR
    server = smbconf("", {"cs": "read only = no\ncase sensitive = yes\nveto files = /secret*/",
                          "folded": f"read only = no\nveto files = /secret*/\n{RECIPE}"})
    (tmp_path / "up").write_bytes(b"data\n")
    for share in ("cs", "folded"):
        (server.root / share / "secret.txt").write_bytes(b"hidden\n")
        ok(server.smbclient(share, f"put {tmp_path / 'up'} \"f.txt:s\""))    # (a depot made)
        assert (server.root / share / STREAMS_DIR).is_dir()
        for name in ("secret.txt", "SECRET.TXT", "Secret.txt", STREAMS_DIR.upper(), STREAMS_DIR):
            done = server.smbclient(share, f"get \"{name}\" {tmp_path / 'got'}")
            assert done.returncode != 0 and "NT_STATUS_" in done.stdout + done.stderr, (share, name, done.stdout)
            assert not (tmp_path / "got").exists()
        put = server.smbclient(share, f"put {tmp_path / 'up'} SECRET2.TXT")
        assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in put.stdout + put.stderr, put.stdout
        assert sorted(p.name for p in (server.root / share).iterdir() if p.name != STREAMS_DIR) == \
            ["f.txt", "secret.txt"]
