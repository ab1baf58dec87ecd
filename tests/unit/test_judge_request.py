"""What the daemon's judge takes from a shim's request (daemon/judge.py): only a well-formed push, and only its own
repository's quarantine. The socket and the judging itself are tested in tests/e2e/test_judge.py."""

from __future__ import annotations

import os

from gitopsd.daemon.judge import Request, quarantine_environ

HEAD = "action=get\ntimeout=900\n"  # what git credential-cache sends before its input


def _request(*lines: str, updates: str = "a b refs/heads/qa\n") -> bytes:
    return (HEAD + "gitopsd-judge-1\n" + "".join(f"{line}\n" for line in lines) + "input\n" + updates).encode()


def test_a_well_formed_request_gives_its_fields_options_identity_and_the_ref_updates_as_git_gave_them():
    request = Request.parse(
        _request(
            "config=/etc/gitopsd/gitopsd.yml", "option=override=fire", "option=x=y", "identity=GL_USER=alice", "names=GL_USER"
        )
    )
    assert request is not None
    assert request.fields == {"config": "/etc/gitopsd/gitopsd.yml", "names": "GL_USER"}
    assert request.options == ["override=fire", "x=y"]
    assert request.identity == {"GL_USER": "alice"}
    assert request.updates == "a b refs/heads/qa\n"


def test_anything_but_a_well_formed_request_is_no_request_and_its_hook_judges_it():
    for data in (
        b"",
        b"action=get\ntimeout=900\n",  # git's lines alone
        _request("config=x").replace(b"gitopsd-judge-1", b"gitopsd-judge-2"),  # a protocol this daemon does not speak
        _request("config=x").replace(b"input\n", b""),  # no ref updates
        _request("unknown=1"),  # a field this daemon does not know
        _request("no equals sign"),
        _request("identity=not a name=alice"),
        _request("identity=GL_USER"),
        _request("config=a\0b"),
        _request(*[f"option=o{i}" for i in range(101)]),
        b"\xff\xfe" + _request("config=x"),
    ):
        assert Request.parse(data) is None, data


def test_only_a_folder_git_made_in_the_repositorys_own_objects_is_taken_as_its_quarantine(tmp_path):
    repo = tmp_path / "shop.git"
    objects = repo / "objects"
    folder = objects / "tmp_objdir-incoming-AbC123"
    folder.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere" / "tmp_objdir-incoming-AbC123"
    elsewhere.mkdir(parents=True)
    (objects / "tmp_objdir-incoming-link").symlink_to(elsewhere)

    def environ(quarantine: str, objs: str, alternates: str) -> dict[str, str] | None:
        request = Request({"quarantine": quarantine, "objects": objs, "alternates": alternates}, [], {}, "")
        return quarantine_environ(request, str(repo))

    assert environ(str(folder), str(folder), f"{repo}/./objects") == {
        "GIT_QUARANTINE_PATH": str(folder),
        "GIT_OBJECT_DIRECTORY": str(folder),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects),
    }
    assert environ("", "", "") == {}  # a push with no objects (a deletion, a ref moved to a known commit)
    for wrong in (
        (str(elsewhere), str(elsewhere), str(objects)),  # another folder of the same name
        (str(objects / "tmp_objdir-incoming-link"), str(objects / "tmp_objdir-incoming-link"), str(objects)),  # a link out
        (str(objects), str(objects), str(objects)),  # the repository's own objects
        (str(objects / "pack"), str(objects / "pack"), str(objects)),  # not a quarantine's name
        (str(folder), str(objects), str(objects)),  # objects written elsewhere than the quarantine
        (str(folder), str(folder), str(tmp_path)),  # another repository's objects beside it
        ("", str(folder), ""),
    ):
        assert environ(*wrong) is None, wrong
    os.chmod(folder, 0)
    try:
        if not os.access(folder, os.R_OK):  # root reads it anyway
            assert environ(str(folder), str(folder), str(objects)) is None  # the shim could not open it to us
    finally:
        os.chmod(folder, 0o755)
