# -*- test-case-name: tests.test_cli -*-
"""
``python -m imd [--config FILE] COMMAND``: administration from the shell.

    db upgrade                 create the database, or migrate it to the newest
                               revision, and say what was done
    db current                 print the database's revision and whether it is the newest
    user add UID [--password PW] [--telephone TEL] [--name NAME]
    user passwd UID [--password PW]
                               without --password: asked for on a terminal,
                               else read from the first line of stdin
    user list
    directory import FILE [--format json|csv]
                               replace the departments and/or contacts the
                               file holds (format from .json/.csv by default)
    directory show             print the directory's versions
    app add NAME               make an app of the server API (seed 003) and
                               print its AppKey and AppSecret, once
    app list                   print the apps (without their secrets)
    app remove NAME|APPKEY
    outbox show [--dead]       print the undelivered webhook rows
    outbox retry ID...|--all   send dead rows again
    outbox drop ID...|--all    delete dead rows
    config defaults            print every configuration key with its default,
                               as a TOML file to start from

Every command names the database it uses on stderr first.  Only ``db
upgrade`` creates a database: the others refuse one that does not exist yet,
which is what a wrong directory or a missing ``--config`` looks like.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import sys
from typing import Sequence

from twisted.internet.defer import ensureDeferred

import imd
from imd.config import Config, ConfigError
from imd.errors import IMError

UPGRADE_HINT = "run `python -m imd db upgrade` (with the server's --config) to create it"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imd", description="imd administration")
    parser.add_argument("--config", help="TOML configuration file (default: built-in defaults)")
    parser.add_argument("--version", action="version", version=f"imd {imd.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="create the database or migrate it to the newest revision")
    db.add_parser("current", help="print the current revision and whether it is the newest")

    user = commands.add_parser("user", help="accounts").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help="create an account")
    add.add_argument("uid")
    add.add_argument("--password", help="default: asked for, or read from stdin")
    add.add_argument("--telephone")
    add.add_argument("--name", default="")
    add.add_argument("--admin", action="store_true", help="may use the admin console at /admin/")
    passwd = user.add_parser("passwd", help="set a password (revokes the user's tokens)")
    passwd.add_argument("uid")
    passwd.add_argument("--password", help="default: asked for, or read from stdin")
    user.add_parser("list", help="list accounts")
    _admin_parser(user)

    directory = commands.add_parser("directory", help="the enterprise directory").add_subparsers(
        dest="action", required=True
    )
    load = directory.add_parser("import", help="replace the departments and/or contacts a file holds")
    load.add_argument("file")
    load.add_argument("--format", choices=("json", "csv"), help="default: from the file's extension")
    directory.add_parser("show", help="print the directory's versions")

    app = commands.add_parser("app", help="apps of the server API").add_subparsers(dest="action", required=True)
    app.add_parser("add", help="make an app; prints its AppKey and AppSecret once").add_argument("name")
    app.add_parser("list", help="list the apps")
    app.add_parser("remove", help="remove an app").add_argument("name", metavar="NAME|APPKEY")

    outbox = commands.add_parser("outbox", help="webhook rows not delivered").add_subparsers(
        dest="action", required=True
    )
    outbox.add_parser("show", help="print undelivered rows").add_argument("--dead", action="store_true")
    for action, what in (("retry", "send dead rows again"), ("drop", "delete dead rows")):
        sub = outbox.add_parser(action, help=what)
        sub.add_argument("ids", nargs="*", type=int, metavar="ID")
        sub.add_argument("--all", action="store_true", help="every dead row")

    config = commands.add_parser("config", help="the configuration").add_subparsers(dest="action", required=True)
    config.add_parser("defaults", help="print every key with its default, as TOML")
    return parser


_FORMATS = {".json": "json", ".csv": "csv"}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":
        # An installed imd has no etc/imd.toml: this is where its keys are.
        print(_defaults_toml(), end="")
        return 0
    try:
        config = Config.load(args.config or os.environ.get("IMD_CONFIG") or None)
    except ConfigError as e:
        print(f"imd: config error: {e}", file=sys.stderr)
        return 2
    from imd.store import migrate

    print(f"database: {migrate.describe(config.database.url)}", file=sys.stderr)
    if args.command == "db":
        return _db(config, args)
    try:
        missing = migrate.current_revision(config.database.url) is None
    except Exception as e:
        print(f"imd: {e}", file=sys.stderr)
        return 1
    if missing:
        print(f"imd: there is no imd database there yet: {UPGRADE_HINT}", file=sys.stderr)
        return 1
    if args.command == "user" and args.action in ("add", "passwd") and args.password is None:
        args.password = _read_password(args.uid)
        if not args.password:
            print("imd: no password given", file=sys.stderr)
            return 2
    if args.command == "outbox" and args.action in ("retry", "drop") and bool(args.ids) == args.all:
        print("imd: give the ids of dead rows, or --all", file=sys.stderr)
        return 2
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


def _defaults_toml() -> str:
    from imd.config import describe

    lines, current = [f"# imd {imd.__version__}: every key with its default."], None
    for section, key, default, doc in describe():
        if section != current:
            lines += ["", f"[{section}]"]
            current = section
        if doc:
            lines.append(f"# {doc}")
        if isinstance(default, bool):
            value = "true" if default else "false"
        elif isinstance(default, int):
            value = str(default)
        else:
            value = json.dumps(default, ensure_ascii=False)
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _read_password(uid: str) -> str:
    """Asked for twice on a terminal; else the first line of stdin (a pipe, a file)."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"password for {uid}: ")
    if password and getpass.getpass("again: ") != password:
        print("imd: the passwords differ", file=sys.stderr)
        return ""
    return password


def _db(config: Config, args: argparse.Namespace) -> int:
    from imd.store import migrate

    url = config.database.url
    try:
        head = migrate.head_revision()
        before = migrate.current_revision(url)
        if args.action == "upgrade":
            migrate.upgrade(url)
            after = migrate.current_revision(url)
            if before == after:
                print(f"{after} (head): already the newest revision, nothing to do")
            else:
                print(f"{after} (head): upgraded from {before or 'no database'}")
        elif before == head:
            print(f"{before} (head)")
        elif before is None:
            print(f"no imd database (head is {head}): {UPGRADE_HINT}")
        else:
            print(f"{before} (head is {head}): run `python -m imd db upgrade` to migrate")
    except Exception as e:
        print(f"imd: {e}", file=sys.stderr)
        return 1
    return 0


def _row(*cells: object) -> None:
    """One tab-separated line; an empty cell is always C{-}."""
    print("\t".join("-" if cell in (None, "") else str(cell) for cell in cells))


def _with_server(config: Config, args: argparse.Namespace) -> int:
    from twisted.internet import task

    from imd.server import Server

    status = []

    # An admin command commits a message or two: not worth a store process.
    config = dataclasses.replace(config, database=dataclasses.replace(config.database, store_process="off"))

    async def run(reactor) -> None:
        server = Server(config, reactor)
        if config.database.migrate_on_start:
            server.store.migrate()
        server.store.start()
        try:
            if args.command == "directory":
                await _directory(server.directory, args)
            elif args.command == "app":
                await _app(server.apps, args)
            elif args.command == "outbox":
                await _outbox(server.store.outbox, args, int(reactor.seconds() * 1000))
            else:
                await _user(server.accounts, args)
            status.append(0)
        except IMError as e:
            print(f"imd: {e.message}", file=sys.stderr)
            status.append(1)
        finally:
            await server.store.stop()

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
        if args.admin:
            await _admin(accounts, user.uid, True)
    elif args.action == "passwd":
        await accounts.set_password(args.uid, args.password)
        print(f"password of {args.uid} set; its tokens are revoked")
    elif args.action == "admin":
        await _admin(accounts, args.uid, not args.off)
    elif args.action == "list":
        _row("UID", "TELEPHONE", "NAME")
        after = ""
        while True:
            page = await accounts.list_users(after=after, limit=500)
            for user in page:
                _row(user.uid, user.telephone, user.name)
            if len(page) < 500:
                break
            after = page[-1].uid


def _admin_parser(user) -> None:
    admin = user.add_parser("admin", help="let a user use the admin console at /admin/")
    admin.add_argument("uid")
    admin.add_argument("--off", action="store_true", help="no longer an administrator")


async def _admin(accounts, uid: str, admin: bool) -> None:
    await accounts.set_admin(uid, admin)
    print(f"{uid} is {'an' if admin else 'no longer an'} administrator")


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


async def _app(apps, args: argparse.Namespace) -> None:
    if args.action == "add":
        app = await apps.create(args.name)
        print(f"AppKey: {app.app_key}\nAppSecret: {app.secret}")
        print("Keep the secret: it is not shown again.", file=sys.stderr)
    elif args.action == "list":
        _row("NAME", "APPKEY")
        for app in await apps.list():
            _row(app.name, app.app_key)
    elif args.action == "remove":
        await apps.remove(args.name)
        print(f"removed {args.name}")


async def _outbox(outbox, args: argparse.Namespace, now: int) -> None:
    ids = None if getattr(args, "all", False) else getattr(args, "ids", None)
    if args.action == "show":
        _row("ID", "KIND", "STATE", "ATTEMPTS", "LAST ERROR")
        for row in await outbox.undelivered(dead_only=args.dead):
            state = "dead" if row.dead_at is not None else "pending"
            _row(row.id, row.kind, state, row.attempts, row.last_error)
    elif args.action == "retry":
        print(f"{await outbox.revive(ids, now)} rows to be sent again")
    elif args.action == "drop":
        print(f"{await outbox.drop(ids)} rows dropped")
