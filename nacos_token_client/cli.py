"""The nacos-token command: a lifecycle demo, the mock server, logins, configs (read, publish, watch) and instances.

Server, user and password come from ``--server``/``--username``/``--password`` (or ``--password-stdin``) or
``NACOS_SERVER_ADDR``/``NACOS_USERNAME``/``NACOS_PASSWORD``; a missing password is prompted for on a terminal.
Every error is one line on stderr and a non-zero exit; the library's log records are shown only with ``--debug``
(which also shows tracebacks), so nothing else reaches stderr first.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import NoReturn

from . import __version__
from .client import NacosTokenClient
from .config import ConfigChange
from .demo import DEMO_SECONDS, run_demo
from .errors import NacosTokenError
from .testing.server import MockNacosServer

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
MAX_SECONDS = 86400.0  # no CLI wait is meant to be longer than a day; larger values overflow httpx's timers
LOGGER = "nacos_token_client"

DESCRIPTION = ("nacos-token: a lifecycle demo, a mock Nacos server, logins, configs (read, publish, watch) and "
               "instances.")
EPILOG = ("Server, user and password come from --server, --username and --password (or --password-stdin), or from "
          "NACOS_SERVER_ADDR, NACOS_USERNAME and NACOS_PASSWORD; a missing password is prompted for on a terminal. "
          "Errors are one line on stderr and a non-zero exit; --debug shows log records and tracebacks.")


class CliError(Exception):
    """A user-facing error: printed as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage block before it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _user(spec: str) -> tuple[str, str]:
    name, sep, password = spec.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"wants NAME:PASSWORD, got {spec!r}")
    return name, password


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
    return number


def _positive(value: str) -> float:
    number = _number(value)
    if not 0 < number <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0 and at most {MAX_SECONDS:.0f}, "
                                         f"got {value!r}")
    return number


def _non_negative(value: str) -> float:
    number = _number(value)
    if not 0 <= number <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be a number of seconds from 0 to {MAX_SECONDS:.0f}, got {value!r}")
    return number


def _whole(value: str, low: int, high: int, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise argparse.ArgumentTypeError(f"must be {what} from {low} to {high}, got {value!r}")
    return number


def _port(value: str) -> int:
    return _whole(value, 0, 65535, "a port number")


def _token_ttl(value: str) -> int:
    return _whole(value, 1, 10 * 365 * 86400, "a whole number of seconds")


def _name(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    if value != value.strip():
        raise argparse.ArgumentTypeError(f"must not start or end with white space, got {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every subcommand also accepts ``--debug`` after its name)."""
    parser = _Parser(prog="nacos-token", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show log records and tracebacks")
    # A subcommand's own --debug must not reset one given before it: SUPPRESS leaves the attribute alone.
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show log records and tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[common])

    command("demo", f"walk through the token lifecycle on an embedded mock server (about {DEMO_SECONDS} s)")

    mock = command("mock-server", "serve a mock Nacos server until interrupted")
    mock.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    mock.add_argument("--port", type=_port, default=8848, help="port to listen on, 0 for any free one (default 8848)")
    mock.add_argument("--user", dest="users", action="append", type=_user, metavar="NAME:PASSWORD",
                      help="a user (repeatable; default nacos:nacos)")
    mock.add_argument("--token-ttl", type=_token_ttl, default=18000, help="token life in seconds (default 18000)")
    mock.add_argument("--token-cache", action="store_true", help="hand back a user's token until 90%% of its life")
    mock.add_argument("--nacos-version", choices=("2", "3", "2.2", "2.5", "3.1"), default="2.5",
                      help="the Nacos release to answer like (2 = 2.5, 3 = 3.1; default 2.5)")
    mock.add_argument("--no-auth", action="store_true",
                      help="requests need no token (as 3.x ships: server auth off); logins still work")
    mock.add_argument("--no-default-user", action="store_true",
                      help="start with no user, like a fresh 2.4+ server (initialise it through the admin API)")
    mock.add_argument("--active-timeout", type=_positive, help="freeze tokens unused for this many seconds")
    mock.add_argument("--secret-key", help="base64 signing key (random by default)")
    mock.add_argument("--context-path", default="/nacos", help="the server's context path (default /nacos)")
    mock.add_argument("--poll-min-hold", type=_non_negative, default=10.0,
                      help="shortest long-poll hold in seconds (real Nacos: 10)")

    def with_connection(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--server", default=os.environ.get("NACOS_SERVER_ADDR"),
                         help="server address(es), comma-separated [NACOS_SERVER_ADDR]")
        sub.add_argument("--username", default=os.environ.get("NACOS_USERNAME"), help="[NACOS_USERNAME]")
        secret = sub.add_mutually_exclusive_group()
        secret.add_argument("--password", default=os.environ.get("NACOS_PASSWORD"),
                            help="[NACOS_PASSWORD]; prompted for on a terminal when missing")
        secret.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of stdin")
        sub.add_argument("--namespace", default="", help="tenant / namespace id")
        sub.add_argument("--context-path", default="/nacos",
                         help="context path for addresses without one (default /nacos)")
        sub.add_argument("--api", choices=("v1", "v3", "auto"), default="v1",
                         help="login and naming API (auto: v3, then v1 on 404/501; default v1)")
        sub.add_argument("--timeout", type=_positive, default=10.0,
                         help="HTTP timeout of each request and login, in seconds (default 10)")
        sub.add_argument("--login-timeout", type=_positive, default=10.0,
                         help="give up getting a token after this many seconds (default 10)")
        return sub

    login = with_connection(command("login", "log in and show the token's life"))
    login.add_argument("--show-token", action="store_true", help="also print the token itself")

    for name, text in (("get-config", "print a config"), ("publish-config", "publish a config"),
                       ("remove-config", "remove a config")):
        sub = with_connection(command(name, text))
        sub.add_argument("--data-id", required=True, type=_name, help="the config's data id")
        sub.add_argument("--group", default="DEFAULT_GROUP", type=_name, help="its group (default DEFAULT_GROUP)")
        if name == "publish-config":
            sub.add_argument("--content", required=True, help="the content, or - to read stdin")
            sub.add_argument("--type", default=None, help="the config type (yaml, json, properties, text ...)")

    watch = with_connection(command("watch-config", "print each change of a config until Ctrl-C"))
    watch.add_argument("--data-id", required=True, type=_name, help="the config's data id")
    watch.add_argument("--group", default="DEFAULT_GROUP", type=_name, help="its group (default DEFAULT_GROUP)")

    instances = with_connection(command("list-instances", "list a service's instances"))
    instances.add_argument("--service", required=True, type=_name, help="the service name")
    instances.add_argument("--group", default="DEFAULT_GROUP", type=_name, help="its group (default DEFAULT_GROUP)")
    instances.add_argument("--healthy-only", action="store_true", help="only healthy instances")
    return parser


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        if getattr(args, "content", None) == "-":
            raise CliError("--password-stdin and --content - both want stdin; pass one of them another way")
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise CliError("--password-stdin: no password on the first line of stdin")
        return password
    if args.password is not None or not args.username:
        return str(args.password) if args.password is not None else None
    if not sys.stdin.isatty():
        raise CliError("no password: pass --password or --password-stdin, or set NACOS_PASSWORD")
    return getpass.getpass(f"password for {args.username}: ")


def _connect(args: argparse.Namespace) -> NacosTokenClient:
    if not args.server:
        raise CliError("no server: pass --server or set NACOS_SERVER_ADDR")
    return NacosTokenClient(args.server, args.username, _password(args), api=args.api, namespace=args.namespace,
                            context_path=args.context_path, timeout=args.timeout, login_timeout=args.login_timeout)


def _cmd_login(args: argparse.Namespace) -> int:
    if not args.username:
        raise CliError("no username: pass --username or set NACOS_USERNAME")
    with _connect(args) as client:
        token = client.get_token()
        info = client.token_info()
        assert info is not None
        now = time.time()
        print(f"user:        {args.username}")
        print(f"server:      {', '.join(str(s) for s in client.servers)}")
        print(f"life:        {info.lifetime:.0f} s (expires in {info.remaining(now):.0f} s)")
        print(f"expires at:  {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(info.expires_at))}")
        print(f"refresh at:  {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(info.refresh_at))}")
        print(f"fingerprint: {info.fingerprint}")
        if args.show_token:
            print(f"token:       {token}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        if args.command == "get-config":
            content = client.get_config(args.data_id, args.group, args.namespace)
            if content is None:
                raise CliError(f"config {args.data_id!r} (group {args.group!r}) does not exist")
            sys.stdout.write(content if content.endswith("\n") else content + "\n")
        elif args.command == "publish-config":
            content = sys.stdin.read() if args.content == "-" else args.content
            if not client.publish_config(args.data_id, content, args.group, args.namespace, args.type):
                raise CliError("the server did not accept the config")
            print("published")
        else:
            client.remove_config(args.data_id, args.group, args.namespace)
            print("removed")
    return 0


def _until_interrupted() -> None:
    """Block until SIGINT or SIGTERM (checked every 0.2 s)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop.wait(0.2):
        pass


def _cmd_watch_config(args: argparse.Namespace) -> int:
    def show(change: ConfigChange) -> None:
        stamp = time.strftime("%H:%M:%S")
        if change.content is None:
            print(f"[{stamp}] {change.data_id} ({change.group}) removed", flush=True)
        else:
            print(f"[{stamp}] {change.data_id} ({change.group}) md5={change.md5}", flush=True)
            sys.stdout.write(change.content if change.content.endswith("\n") else change.content + "\n")
            sys.stdout.flush()

    with _connect(args) as client:
        current = client.get_config(args.data_id, args.group, args.namespace)
        client.add_config_listener(args.data_id, show, args.group, args.namespace)
        print(f"watching {args.data_id} ({args.group}): "
              f"{'absent' if current is None else f'{len(current)} characters now'}; Ctrl-C stops", flush=True)
        _until_interrupted()
    print("stopped watching", flush=True)
    return 0


def _cmd_list_instances(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        found = client.list_instances(args.service, group_name=args.group, healthy_only=args.healthy_only)
    for instance in found:
        state = "healthy" if instance.healthy else "UNHEALTHY"
        meta = " ".join(f"{k}={v}" for k, v in sorted(instance.metadata.items()))
        print(f"{instance.ip}:{instance.port}  {state}  cluster={instance.cluster_name}  weight={instance.weight:g}"
              f"{'  ' + meta if meta else ''}")
    print(f"{len(found)} instance(s) of {args.group}@@{args.service}")
    return 0


def _cmd_mock_server(args: argparse.Namespace) -> int:
    users = dict(args.users) if args.users else {} if args.no_default_user else {"nacos": "nacos"}
    try:
        server = MockNacosServer(users=users, token_ttl=args.token_ttl, token_cache=args.token_cache,
                                 nacos_version=args.nacos_version, auth_enabled=not args.no_auth,
                                 active_timeout=args.active_timeout,
                                 secret_key=args.secret_key, context_path=args.context_path,
                                 poll_min_hold=args.poll_min_hold)
    except (ValueError, NacosTokenError) as exc:
        raise CliError(str(exc)) from None
    try:
        url = server.start(args.host, args.port)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    print(f"mock Nacos {server.nacos_version} listening on {url} (context {server.context_path or '/'}; "
          f"users: {', '.join(users) or 'none yet'}; auth {'on' if server.auth_enabled else 'off'}; "
          f"token life {args.token_ttl} s)", flush=True)
    try:
        _until_interrupted()
    finally:
        server.stop()
        print("mock server stopped", flush=True)
    return 0


@contextlib.contextmanager
def _logging(debug: bool) -> Iterator[None]:
    """The CLI owns stderr: the library's records (retries, failures) are shown only with ``--debug``, so an error
    is the one line printed after them. The logger's previous set-up is restored on the way out (``main`` may run
    inside another program, or a test)."""
    package = logging.getLogger(LOGGER)
    saved = (package.handlers[:], package.level, package.propagate)
    if debug:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package.setLevel(logging.DEBUG)
    else:
        handler = logging.NullHandler()
    package.handlers = [handler]
    package.propagate = False
    try:
        yield
    finally:
        package.handlers, package.level, package.propagate = saved


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 an error, 2 a usage error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"demo": lambda _args: run_demo(), "login": _cmd_login, "get-config": _cmd_config,
                "publish-config": _cmd_config, "remove-config": _cmd_config, "mock-server": _cmd_mock_server,
                "watch-config": _cmd_watch_config, "list-instances": _cmd_list_instances}
    with _logging(args.debug):
        try:
            return handlers[args.command](args)
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # CliError, NacosTokenError, network errors and the like: one line
            if args.debug:
                raise
            detail = str(exc) if isinstance(exc, CliError | NacosTokenError) else f"{type(exc).__name__}: {exc}"
            print(f"nacos-token: error: {_one_line(detail)}", file=sys.stderr)
            return EXIT_ERROR
