# -*- test-case-name: tests.test_cli -*-
"""
``python -m imd [--config FILE] COMMAND``: administration from the shell.

    db upgrade                 migrate the database to the newest revision
    db current                 print the database's revision
    user add UID --password PW [--telephone TEL] [--name NAME]
    user passwd UID [--password PW]   (asks when --password is absent)
    user list
    directory import FILE [--format json|csv]
                               replace the departments and/or contacts the
                               file holds (format from .json/.csv by default)
    directory show             print the directory's versions
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Sequence

from twisted.internet.defer import ensureDeferred

from imd.config import Config, ConfigError
from imd.errors import IMError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imd", description="imd administration")
    parser.add_argument("--config", help="TOML configuration file (default: built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="migrate to the newest revision")
    db.add_parser("current", help="print the current revision")

    user = commands.add_parser("user", help="accounts").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help="create an account")
    add.add_argument("uid")
    add.add_argument("--password", required=True)
    add.add_argument("--telephone")
    add.add_argument("--name", default="")
    passwd = user.add_parser("passwd", help="set a password (revokes the user's tokens)")
    passwd.add_argument("uid")
    passwd.add_argument("--password")
    user.add_parser("list", help="list accounts")

    directory = commands.add_parser("directory", help="the enterprise directory").add_subparsers(
        dest="action", required=True
    )
    load = directory.add_parser("import", help="replace the departments and/or contacts a file holds")
    load.add_argument("file")
    load.add_argument("--format", choices=("json", "csv"), help="default: from the file's extension")
    directory.add_parser("show", help="print the directory's versions")
    return parser


_FORMATS = {".json": "json", ".csv": "csv"}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = Config.load(args.config or os.environ.get("IMD_CONFIG") or None)
    except ConfigError as e:
        print(f"imd: config error: {e}", file=sys.stderr)
        return 2
    if args.command == "db":
        return _db(config, args)
    if args.command == "user" and args.action == "passwd" and args.password is None:
        args.password = getpass.getpass(f"new password for {args.uid}: ")
    if args.command == "directory" and args.action == "import":
        if args.format is None:
            args.format = _FORMATS.get(os.path.splitext(args.file)[1].lower())
            if args.format is None:
                print(f"imd: cannot tell the format of {args.file}: use --format json or csv", file=sys.stderr)
                return 2
        try:
            with open(args.file, "rb") as f:
                args.data = f.read()
        except OSError as e:
            print(f"imd: cannot read {args.file}: {e.strerror or e}", file=sys.stderr)
            return 1
    return _with_server(config, args)


def _db(config: Config, args: argparse.Namespace) -> int:
    from imd.store import migrate

    try:
        if args.action == "upgrade":
            migrate.upgrade(config.database.url)
        print(migrate.current_revision(config.database.url) or "(empty database)")
    except Exception as e:
        print(f"imd: {e}", file=sys.stderr)
        return 1
    return 0


def _with_server(config: Config, args: argparse.Namespace) -> int:
    from twisted.internet import task

    from imd.server import Server

    status = []

    async def run(reactor) -> None:
        server = Server(config, reactor)
        if config.database.migrate_on_start:
            server.store.migrate()
        server.store.start()
        try:
            if args.command == "directory":
                await _directory(server.directory, args)
            else:
                await _user(server.accounts, args)
            status.append(0)
        except IMError as e:
            print(f"imd: {e.message}", file=sys.stderr)
            status.append(1)
        finally:
            server.store.stop()

    try:
        task.react(lambda reactor: ensureDeferred(run(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return status[0] if status else 1


async def _user(accounts, args: argparse.Namespace) -> None:
    if args.action == "add":
        user = await accounts.register(
            args.uid, args.password, telephone=args.telephone, name=args.name
        )
        print(f"created {user.uid}")
    elif args.action == "passwd":
        await accounts.set_password(args.uid, args.password)
        print(f"password of {args.uid} set; its tokens are revoked")
    elif args.action == "list":
        after = ""
        while True:
            page = await accounts.list_users(after=after, limit=500)
            for user in page:
                print(f"{user.uid}\t{user.telephone or '-'}\t{user.name}")
            if len(page) < 500:
                break
            after = page[-1].uid


async def _directory(directory, args: argparse.Namespace) -> None:
    from imd.core.directory import KINDS

    if args.action == "import":
        result = await directory.import_data(args.data, args.format)
        for kind in KINDS:
            if kind in result:
                version, changed = result[kind]
                print(f"{kind}: version {version}, {changed} row{'' if changed == 1 else 's'} changed")
    elif args.action == "show":
        for kind in KINDS:
            version = await directory.version(kind)
            print(f"{kind}: version {version}")
