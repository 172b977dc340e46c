"""`dir-cloud repo` (keys, init, add, rotate, refresh) and `export --repo` argument checks, in-process."""

from __future__ import annotations

import json
import os
import stat

from cloud.cli import main
from cloud.export.signing import SignedRepository
from tests.helpers.device import SPEC
from tests.helpers.service import served_bundle


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_repo_commands_keep_the_root_key_for_init_and_rotation_only(tmp_path, capsys):
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    assert run(capsys, "repo", "keys", "--out", str(keys))[0] == 0
    assert all(
        stat.S_IMODE(os.stat(keys / f"{r}.pem").st_mode) == 0o600 for r in ("root", "targets", "snapshot", "timestamp")
    )
    code, _, err = run(capsys, "repo", "keys", "--out", str(keys))
    assert code == 2 and "keys exist already" in err
    assert (
        run(capsys, "repo", "init", "--repo", str(repo), "--root-key", str(keys / "root.pem"), "--keys", str(keys))[0]
        == 0
    )
    offline = tmp_path / "offline-root.pem"
    os.rename(keys / "root.pem", offline)  # routine publishing works without it
    bundle = served_bundle(tmp_path / "bundles" / "v1", SPEC, created_at="2030-01-01T00:00:00+00:00")
    code, out, _ = run(capsys, "repo", "add", "--repo", str(repo), "--keys", str(keys), str(bundle))
    assert code == 0 and json.loads(out)["signed"] == "v1" and (bundle / "tuf" / "timestamp.json").is_file()
    assert SignedRepository(repo).index()["latest"] == "v1"
    assert (
        run(capsys, "repo", "refresh", "--repo", str(repo), "--keys", str(keys), "--expiry-days", "timestamp=1")[0] == 0
    )
    code, _, err = run(capsys, "repo", "rotate", "--repo", str(repo), "--root-key", str(keys / "targets.pem"))
    assert code == 2 and "not the repository's current root key" in err
    run(capsys, "repo", "keys", "--out", str(tmp_path / "new"))
    code, out, _ = run(
        capsys,
        "repo",
        "rotate",
        "--repo",
        str(repo),
        "--root-key",
        str(offline),
        "--new-root-key",
        str(tmp_path / "new" / "root.pem"),
    )
    assert code == 0 and json.loads(out)["root_version"] == 2
    assert len(SignedRepository(repo).root().signatures) == 2  # signed by the old and the new root key


def test_bad_repo_arguments_are_clear_errors(tmp_path, capsys):
    code, _, err = run(capsys, "repo", "add", "--repo", str(tmp_path / "none"), "--keys", str(tmp_path), "x")
    assert code == 2 and "not a signed repository" in err and "dir-cloud repo init" in err
    code, _, err = run(
        capsys, "repo", "refresh", "--repo", str(tmp_path), "--keys", str(tmp_path), "--expiry-days", "everything=3"
    )
    assert code == 2 and "--expiry-days" in err
    run(capsys, "repo", "keys", "--out", str(tmp_path / "k"))
    run(
        capsys,
        "repo",
        "init",
        "--repo",
        str(tmp_path / "r"),
        "--root-key",
        str(tmp_path / "k" / "root.pem"),
        "--keys",
        str(tmp_path / "k"),
    )
    bad = served_bundle(tmp_path / ".hidden", SPEC, created_at="2030-01-01T00:00:00+00:00")
    code, _, err = run(capsys, "repo", "add", "--repo", str(tmp_path / "r"), "--keys", str(tmp_path / "k"), str(bad))
    assert code == 2 and "bundle version '.hidden'" in err
    code, _, err = run(capsys, "export", "--run", "RUN", "--out", "B", "--repo", str(tmp_path / "r"))
    assert code == 2 and "--repo and --keys go together" in err
