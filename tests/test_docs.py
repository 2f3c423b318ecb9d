"""Every public name has a docstring, and every constructor option is documented where users read it.

Public names: everything in the ``__all__`` of the public modules, and the public (not ``_``-prefixed) methods and
properties of those classes, including what they inherit from this package's own base classes (not what httpx or
the standard library gives them). A class's ``__init__`` parameters and a dataclass's fields must be named in the
class docstring (or ``__init__``'s), which is what the API reference shows. The failure lists every offender.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import inspect
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

import nacos_token_client
from nacos_token_client import (
    AsyncNacosTokenClient,
    FileTokenStore,
    MemoryTokenStore,
    NacosTokenAuth,
    NacosTokenClient,
    RedisTokenStore,
    TokenInfo,
    WatchSettings,
)
from nacos_token_client.testing import MockNacosServer

PACKAGE = "nacos_token_client"
PUBLIC_MODULES = (
    "nacos_token_client",
    "nacos_token_client.stores",
    "nacos_token_client.testing",
    "nacos_token_client.errors",
    "nacos_token_client.events",
)
#: Values (not classes or functions) in an ``__all__`` that need no docstring of their own.
PLAIN_VALUES = {"__version__"}
#: Handles the library makes and returns, never constructed by users: their docstrings must say where they come
#: from instead of documenting constructor parameters.
HANDLES = {
    "Registration": "register_instance",
    "AsyncRegistration": "register_instance",
    "ConfigWatch": "add_config_listener",
}


def _doc(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").strip() if not inspect.isclass(obj) else (obj.__dict__.get("__doc__") or "")


def _own_classes(cls: type) -> Iterator[type]:
    """The class and the bases it inherits from this package (httpx's and the standard library's are skipped)."""
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] == PACKAGE:
            yield klass


def _members(cls: type) -> Iterator[tuple[type, str, Any]]:
    """Public methods and properties, with the (package) class that defines each."""
    for klass in _own_classes(cls):
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            member = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if isinstance(member, property):
                yield klass, name, member.fget
            elif inspect.isfunction(member):
                yield klass, name, member


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text) is not None


def _documented_values() -> set[str]:
    """Module-level assignments in the package followed by a string literal (an attribute docstring)."""
    found: set[str] = set()
    for path in Path(nacos_token_client.__file__).parent.rglob("*.py"):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for stmt, following in itertools.pairwise(body):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(
                stmt, ast.AnnAssign) else []
            if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str) and following.value.value.strip()):
                found.update(t.id for t in targets if isinstance(t, ast.Name))
    return found


def _public_objects() -> Iterator[tuple[str, str, Any]]:
    for module_name in PUBLIC_MODULES:
        module: ModuleType = importlib.import_module(module_name)
        for name in module.__all__:
            yield module_name, name, getattr(module, name)


def offenders() -> list[str]:
    """Every public name without a docstring, and every undocumented constructor parameter or field."""
    found: list[str] = []
    seen: set[tuple[str, ...]] = set()
    documented_values = _documented_values()
    for module_name in PUBLIC_MODULES:
        if not (importlib.import_module(module_name).__doc__ or "").strip():
            found.append(f"{module_name}: module docstring")
    for module_name, name, obj in _public_objects():
        where = f"{module_name}.{name}"
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            if name not in PLAIN_VALUES and name not in documented_values:
                found.append(f"{where}: a value without a docstring (put a string literal after its assignment)")
            continue
        key = (obj.__module__, obj.__qualname__)
        if key in seen:
            continue
        seen.add(key)
        if not _doc(obj).strip():
            found.append(f"{where}: no docstring")
        if not inspect.isclass(obj):
            continue
        for klass, member, function in _members(obj):
            member_key = (klass.__module__, klass.__qualname__, member)
            if member_key in seen:
                continue
            seen.add(member_key)
            if not (function.__doc__ or "").strip():
                found.append(f"{klass.__module__}.{klass.__qualname__}.{member}: no docstring")
        found.extend(_undocumented_parameters(where, obj))
    return found


def _undocumented_parameters(where: str, cls: type) -> list[str]:
    if issubclass(cls, enum.Enum):
        return []  # members are named in the reference; their meaning goes in the class docstring
    class_doc = _doc(cls)
    if cls.__name__ in HANDLES:
        origin = HANDLES[cls.__name__]
        return [] if _mentions(class_doc, origin) else [f"{where}: a handle whose docstring does not name {origin}"]
    if dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls)]
        text = class_doc
    else:
        init = cls.__dict__.get("__init__")
        if init is None or not inspect.isfunction(init) or init.__module__.split(".")[0] != PACKAGE:
            return []
        names = [p.name for p in list(inspect.signature(init).parameters.values())[1:]
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        text = class_doc + "\n" + (init.__doc__ or "")
    return [f"{where}: parameter or field {name!r} is not named in the class docstring"
            for name in names if not _mentions(text, name)]


def test_every_public_name_is_documented() -> None:
    missing = offenders()
    assert not missing, f"{len(missing)} public names lack documentation:\n" + "\n".join(missing)


def test_the_check_sees_an_undocumented_method(monkeypatch: Any) -> None:
    """The walk really reaches methods (including inherited package ones), parameters and fields."""
    monkeypatch.setattr(MemoryTokenStore.get, "__doc__", None)
    monkeypatch.setattr(TokenInfo, "__doc__", "A snapshot.")
    inherited = next(f for k, n, f in _members(MockNacosServer) if n == "rotate_secret")
    monkeypatch.setattr(inherited, "__doc__", "")
    found = "\n".join(offenders())
    assert "nacos_token_client.stores.memory.MemoryTokenStore.get: no docstring" in found
    assert "'expires_at' is not named" in found
    assert ".rotate_secret: no docstring" in found


CONFIGURATION_PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
#: The option tables of docs/configuration.md, by the heading above them, and what each documents.
CONFIGURATION_TABLES: dict[str, Any] = {
    "NacosTokenAuth": NacosTokenAuth,
    "WatchSettings": WatchSettings,
    "FileTokenStore": FileTokenStore,
    "RedisTokenStore": RedisTokenStore,
    "MemoryTokenStore": MemoryTokenStore,
    "NacosTokenClient": NacosTokenClient,  # the heading names both wrapper clients; their signatures match (below)
}
#: A wrapper client's option that NacosTokenAuth also takes, defaulting to None ("NacosTokenAuth's default") or
#: required, is documented by NacosTokenAuth's table; its own table may still list it.
PASSED_TO_AUTH: dict[str, Any] = {"NacosTokenClient": NacosTokenAuth}
_HEADING = re.compile(r"^## `(\w+)`")
_ROW = re.compile(r"^\| `(\w+)` \| ([^|]+) \|")


def _configuration_tables() -> dict[str, dict[str, str]]:
    """Heading name -> option -> the default as the page quotes it."""
    tables: dict[str, dict[str, str]] = {}
    current: str | None = None
    for line in CONFIGURATION_PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = _HEADING.match(line)
            current = heading.group(1) if heading else None
        elif current is not None and (row := _ROW.match(line)):
            tables.setdefault(current, {})[row.group(1)] = row.group(2).strip()
    return tables


def _quoted_default_differs(quoted: str, default: Any) -> bool:
    text = quoted.strip("`")
    if default is inspect.Parameter.empty:
        return text != "required"
    if isinstance(default, enum.Enum) and type(default).__name__.startswith("_"):
        return text != "not given"  # a private sentinel: the option's meaning depends on whether it was given
    if callable(default):
        return text != default.__name__ and not text.endswith("." + default.__name__)
    try:
        return bool(_literal_or_httpx_value(text) != default)
    except (ValueError, SyntaxError, TypeError):
        return True


def _literal_or_httpx_value(text: str) -> Any:
    """A literal, or an httpx value class called with literal keywords: ``httpx.Limits(max_connections=100)``."""
    tree = ast.parse(text, mode="eval").body
    if (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Attribute) and isinstance(tree.func.value, ast.Name)
            and tree.func.value.id == "httpx" and tree.func.attr in ("Limits", "Timeout") and not tree.args):
        return getattr(httpx, tree.func.attr)(**{k.arg: ast.literal_eval(k.value) for k in tree.keywords if k.arg})
    return ast.literal_eval(tree)


_REQUIRED = inspect.Parameter.empty


def _options(target: Any) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(target).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def test_configuration_page_matches_the_signatures() -> None:
    """Every option is in the page's table, and every default quoted there is the one the code has."""
    tables = _configuration_tables()
    problems: list[str] = []
    for heading, target in CONFIGURATION_TABLES.items():
        rows = tables.get(heading)
        if rows is None:
            problems.append(f"docs/configuration.md has no option table under '## `{heading}`'")
            continue
        parameters = _options(target)
        covered = _options(PASSED_TO_AUTH[heading]) if heading in PASSED_TO_AUTH else {}
        passed = {name for name in covered if parameters.get(name, 0) is None or parameters.get(name, 0) is _REQUIRED}
        problems += [f"{heading}: option {name!r} is missing from the table" for name in parameters
                     if name not in rows and name not in passed]
        problems += [f"{heading}: the table lists {name!r}, which is no parameter" for name in rows
                     if name not in parameters]
        problems += [f"{heading}: {name!r} is quoted as {rows[name]} but defaults to {parameters[name]!r}"
                     for name in rows if name in parameters and _quoted_default_differs(rows[name], parameters[name])]
    assert not problems, "\n".join(problems)


def test_the_wrapper_clients_share_one_table() -> None:
    """One table documents both wrapper clients: they take the same options with the same defaults."""
    assert _options(AsyncNacosTokenClient) == _options(NacosTokenClient)


def test_the_configuration_check_sees_a_wrong_default() -> None:
    tables = _configuration_tables()
    assert tables["NacosTokenAuth"]["refresh_ratio"] == "`0.9`"
    assert not _quoted_default_differs("`httpx.Limits(max_connections=100, max_keepalive_connections=20)`",
                                       httpx.Limits(max_connections=100, max_keepalive_connections=20))
    assert _quoted_default_differs("`httpx.Limits(max_connections=10)`", httpx.Limits(max_connections=100))
    assert _quoted_default_differs("`0.8`", 0.9)
    assert _quoted_default_differs("`(0.2, 5.0)`", (0.2, 4.0))
    assert not _quoted_default_differs("`time.monotonic`", time.monotonic)
    assert _quoted_default_differs("required", None)
