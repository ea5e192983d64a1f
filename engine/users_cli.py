"""`proxy-labeler users {add,passwd,disable,enable,role,grant,revoke,list,audit}`: the accounts of a shared server
(storage/accounts.py), kept in PROXY_LABELER_HOME. Torch-free: it imports only storage.

A password is read from the terminal without echo (asked twice), or with --password-stdin as the
first line of standard input (for scripts). There is no default password.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import os
import sys
from pathlib import Path


def add_users_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Accounts of a shared server, kept in PROXY_LABELER_HOME (default ~/.proxy_labeler). Once a user "
        "exists, every request needs a signed-in session and the server may listen beyond localhost."
    )
    actions = parser.add_subparsers(
        dest="action", required=True, metavar="{add,passwd,disable,enable,role,grant,revoke,list,audit}"
    )
    add = actions.add_parser("add", help="add a user (the first admin is made here)")
    add.add_argument("name", help="1 to 64 letters, digits, '.', '_' or '-'")
    add.add_argument("--role", required=True, choices=("admin", "annotator", "viewer"))
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd = actions.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    for action, text in (("disable", "disable a user (ends their sessions)"), ("enable", "enable a user again")):
        actions.add_parser(action, help=text).add_argument("name")
    role = actions.add_parser("role", help="change a user's role (ends their sessions)")
    role.add_argument("name")
    role.add_argument("role", choices=("admin", "annotator", "viewer"))
    for action, text in (
        ("grant", "make a user a member of a project (annotators and viewers see only their projects)"),
        ("revoke", "remove a user from a project"),
    ):
        member = actions.add_parser(action, help=text)
        member.add_argument("name")
        member.add_argument("project", help="the project folder (the one holding project.db)")
    actions.add_parser("list", help="list the users and their projects")
    audit = actions.add_parser("audit", help="write the audit trail as CSV (newest first) to standard output")
    audit.add_argument("--limit", type=int, default=None, help="only the newest N entries")
    parser.set_defaults(run="engine.users_cli:run_users_command")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask the password on: pass --password-stdin and write it to standard input")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ; nothing changed")
    return first


def _actor() -> str:
    """Who ran the command, for the audit trail: the operating-system account."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid {os.getuid()}"


def run_users_command(args: argparse.Namespace) -> int:
    from storage import accounts

    actor = _actor()
    if args.action == "list":
        users = accounts.list_users()
        if not users:
            print(
                "no users: the app runs on localhost without sign-in; add the first admin with "
                "`proxy-labeler users add NAME --role admin`"
            )
        for user in users:
            when = datetime.datetime.fromtimestamp(user.updated_at).strftime("%Y-%m-%d %H:%M")
            state = "enabled" if user.enabled else "disabled"
            projects = "every project" if user.role == "admin" else ", ".join(accounts.projects_of(user.name)) or "-"
            print(f"{user.name}\t{user.role}\t{state}\tchanged {when}\t{projects}")
        return 0
    if args.action == "audit":
        accounts.write_audit_csv(accounts.audit_entries(limit=args.limit), sys.stdout)
        return 0
    accounts.check_name(args.name)  # a bad name is refused before a password is asked
    if args.action == "add":
        accounts.add_user(args.name, args.role, _password(args), actor=actor)
        print(f"added {args.name} ({args.role})")
    elif args.action == "passwd":
        if accounts.get_user(args.name) is None:
            raise accounts.AccountError(f"there is no user {args.name!r}; `proxy-labeler users list` shows them")
        accounts.set_password(args.name, _password(args), actor=actor)
        print(f"password of {args.name} changed; their sessions are ended")
    elif args.action in ("disable", "enable"):
        accounts.set_enabled(args.name, args.action == "enable", actor=actor)
        print(f"{args.name} {args.action}d")
    elif args.action in ("grant", "revoke"):
        from storage import Project

        folder = Path(args.project).expanduser().absolute()
        if args.action == "grant" and not Project(folder).db_path.is_file():
            raise accounts.AccountError(f"{folder} holds no project (no project.db in it); nothing changed")
        changed = accounts.set_member(folder, args.name, args.action == "grant", actor=actor)
        verb = "is now a member of" if args.action == "grant" else "is no longer a member of"
        print(f"{args.name} {verb} {accounts.project_key(folder)}" + ("" if changed else " (nothing to change)"))
    elif args.action == "role":
        accounts.set_role(args.name, args.role, actor=actor)
        print(f"{args.name} is now {args.role}; their sessions are ended")
    return 0
