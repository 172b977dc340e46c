"""Sign model bundles for devices: keys, the signed repository (The Update Framework), adding, key rotation.

    dir-cloud repo keys --out KEYS                          # Ed25519 keys, one per role: move root.pem OFFLINE
    dir-cloud repo init --repo REPO --root-key KEYS/root.pem --keys KEYS
    dir-cloud repo add --repo REPO --keys KEYS BUNDLE       # online keys only; BUNDLE/tuf/ gets the metadata
    dir-cloud repo rotate --repo REPO --root-key OLD.pem --new-root-key NEW.pem [--new-keys NEWKEYS]
    dir-cloud repo refresh --repo REPO --keys KEYS          # re-sign before the short-lived roles expire

Serve it with `dir-cloud serve ... --repo REPO`; provision devices with `dir-device trust REPO/metadata/1.root.json`.
See docs/service.md (signed updates).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    keys = sub.add_parser("keys", help="create one Ed25519 key per role (PEM files, mode 0600)")
    keys.add_argument("--out", required=True, help="folder to write root.pem, targets.pem, snapshot.pem, timestamp.pem")
    init = sub.add_parser("init", help="create the repository: root v1 signed by the root key")
    add = sub.add_parser("add", help="sign a bundle folder as the latest (targets, snapshot, timestamp keys)")
    add.add_argument("bundle", metavar="BUNDLE", help="exported bundle folder (its name is the version)")
    add.add_argument("--version", default=None, help="version name in the repository (default: the folder name)")
    rotate = sub.add_parser("rotate", help="new root version signed by the old and the new root key")
    rotate.add_argument("--new-root-key", default=None, help="the new root key (default: keep the root key)")
    rotate.add_argument("--new-keys", default=None, help="folder with new targets/snapshot/timestamp keys")
    refresh = sub.add_parser("refresh", help="re-sign targets, snapshot and timestamp with fresh expiry dates")
    for cmd in (init, add, rotate, refresh):
        cmd.add_argument("--repo", required=True, help="repository folder")
        cmd.add_argument(
            "--expiry-days",
            default=None,
            help="per role, e.g. timestamp=1,snapshot=7 (default: root=365,targets=90,snapshot=30,timestamp=7)",
        )
    init.add_argument("--root-key", required=True, help="the root key (kept offline; needed only here and to rotate)")
    rotate.add_argument("--root-key", required=True, help="the repository's current root key")
    for cmd in (init, add, refresh):
        cmd.add_argument("--keys", required=True, help="folder with targets.pem, snapshot.pem, timestamp.pem")


def run(args: argparse.Namespace) -> int:
    from cloud.export.signing import SignedRepository, create_keys

    days = _days(args.expiry_days) if getattr(args, "expiry_days", None) else None
    if args.action == "keys":
        out = {role: str(path) for role, path in create_keys(args.out).items()}
        print(json.dumps({"keys": out, "note": "move root.pem to offline storage after `repo init`"}, indent=2))
    elif args.action == "init":
        repo = SignedRepository.init(args.repo, args.root_key, args.keys, days)
        print(json.dumps({"repo": str(repo.folder), "trust": str(repo.metadata / "1.root.json")}, indent=2))
    elif args.action == "add":
        version = SignedRepository(args.repo).add_bundle(args.bundle, args.keys, args.version, days)
        print(json.dumps({"signed": version, "carried": f"{args.bundle}/tuf"}, indent=2))
    elif args.action == "rotate":
        root_version = SignedRepository(args.repo).rotate(args.root_key, args.new_root_key, args.new_keys, days)
        print(json.dumps({"root_version": root_version}, indent=2))
    else:
        SignedRepository(args.repo).refresh(args.keys, days)
        print(json.dumps({"refreshed": args.repo}, indent=2))
    return 0


def _days(text: str) -> dict[str, float]:
    out = {}
    for item in text.split(","):
        role, sep, value = item.partition("=")
        try:
            out[role.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--expiry-days {text!r}: write ROLE=DAYS,... with DAYS a number") from None
        if not sep or role.strip() not in ("root", "targets", "snapshot", "timestamp"):
            raise ValueError(f"--expiry-days {text!r}: roles are root, targets, snapshot, timestamp")
    return out
