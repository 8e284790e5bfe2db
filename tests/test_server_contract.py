"""Server tier: the JSON of ``/vram/devices`` and ``/vram/kernels`` is what the sidebar's types say.

The reply interfaces of labextension/src/api.ts are parsed here (a small parser for the subset
of TypeScript they use) and the replies of the real Jupyter server with the vram_magic extension
are checked against them, both ways: each key the server sends is declared, with its JSON type,
and each required field is sent. The replies must also, between them, show every declared type
at every place (a `null` aside): a field no reply has any more, a union member the server never
sends (`index: number | string` for a string), an array always empty, fail too. So a change on
either side without the other fails this test.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_nvml import fake_session

from vram_magic.protocol.kernel_status import KernelDevice, KernelStatus, status_path, write_status
from vram_magic.readings import nvml

pytest.importorskip("pytest_jupyter")
pytest_plugins = ["pytest_jupyter.jupyter_server"]

API_TS = Path(__file__).parent.parent / "labextension" / "src" / "api.ts"
RECORDINGS = sorted(p.stem for p in (Path(__file__).parent / "nvml_recordings").glob("*.json"))
GIB = 2**30
MAX_SHOWN = 30  # disagreements listed, of many: each machine repeats them
ABSENT_PID = 999_999_999  # not in our PID namespace: another user's, as far as the server knows


# ---------------------------------------------------------------------------------------------
# The types: TypeScript interfaces, parsed


@dataclass(frozen=True)
class Prim:
    name: str  # string, number, boolean, null


@dataclass(frozen=True)
class Literal:
    value: str | bool


@dataclass(frozen=True)
class Array:
    item: Type


@dataclass(frozen=True)
class Ref:
    name: str  # an interface of api.ts


@dataclass(frozen=True)
class OneOf:
    members: tuple[Type, ...]


@dataclass(frozen=True)
class Field:
    type: Type
    optional: bool


@dataclass(frozen=True)
class Object:
    fields: dict[str, Field]


Type = Prim | Literal | Array | Ref | OneOf | Object

PRIMITIVES = {"string", "number", "boolean", "null"}
TOKEN = re.compile(r"\s*(?:(\[\])|([{}()|;:,?])|'([^']*)'|\"([^\"]*)\"|([A-Za-z_$][\w$]*))")


class Parser:
    """Recursive descent over one interface body or type; raises on anything it does not know
    (generics, `extends`, `any`, index signatures...), so api.ts cannot drift out of reach."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.rstrip()
        while position < len(text):
            match = TOKEN.match(text, position)
            if not match or match.end() == position:
                raise SyntaxError(f"api.ts: cannot read {text[position : position + 30]!r}")
            array, punct, single, double, word = match.groups()
            if array:
                self.tokens.append(("[]", "[]"))
            elif punct:
                self.tokens.append((punct, punct))
            elif single is not None or double is not None:
                self.tokens.append(("str", single if single is not None else double))
            else:
                self.tokens.append(("word", word))
            position = match.end()
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at][0] if self.at < len(self.tokens) else None

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            found = self.tokens[self.at] if self.at < len(self.tokens) else "the end"
            raise SyntaxError(f"api.ts: expected {kind!r}, found {found}")
        self.at += 1
        return self.tokens[self.at - 1][1]

    def fields(self, closing: str | None) -> Object:
        fields: dict[str, Field] = {}
        while self.peek() not in (closing, None):
            name = self.take("word")
            optional = self.peek() == "?"
            if optional:
                self.take("?")
            self.take(":")
            if name in fields:
                raise SyntaxError(f"api.ts: field {name} twice")
            fields[name] = Field(self.union(), optional)
            if self.peek() in (";", ","):
                self.at += 1
        return Object(fields)

    def union(self) -> Type:
        if self.peek() == "|":  # a leading bar, as prettier writes long unions
            self.take("|")
        members = [self.member()]
        while self.peek() == "|":
            self.take("|")
            members.append(self.member())
        return members[0] if len(members) == 1 else OneOf(tuple(members))

    def member(self) -> Type:
        kind = self.peek()
        if kind == "{":
            self.take("{")
            found: Type = self.fields("}")
            self.take("}")
        elif kind == "(":
            self.take("(")
            found = self.union()
            self.take(")")
        elif kind == "str":
            found = Literal(self.take("str"))
        else:
            word = self.take("word")
            if word in PRIMITIVES:
                found = Prim(word)
            elif word in ("true", "false"):
                found = Literal(word == "true")
            elif word[0] == "I" and word[1:2].isupper():
                found = Ref(word)
            else:
                raise SyntaxError(f"api.ts: type {word!r} is not JSON the contract can check")
        while self.peek() == "[]":
            self.take("[]")
            found = Array(found)
        return found


def strip_comments(source: str) -> str:
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL))


def parse_interfaces(source: str) -> dict[str, Object]:
    """Every ``export interface I... { ... }`` of ``source``, by name."""
    source = strip_comments(source)
    interfaces: dict[str, Object] = {}
    for match in re.finditer(r"\binterface\s+(\w+)\s*([^{]*)\{", source):
        name, between = match.groups()
        if between.strip():
            raise SyntaxError(f"api.ts: interface {name} {between.strip()}: not supported here")
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(source[end], 0)
            end += 1
        parser = Parser(source[match.end() : end - 1])
        interfaces[name] = parser.fields(None)
    return interfaces


def endpoint_types(source: str) -> dict[str, str]:
    """The reply type api.ts reads each GET endpoint with: ``request<IDevicesReply>(settings,
    'devices')``."""
    found = re.findall(r"request<(\w+)>\(\s*settings,\s*'([\w/]+)'\s*\)", source)
    return {path: reply for reply, path in found}


# ---------------------------------------------------------------------------------------------
# The check: a JSON value against a type, both ways


def describe(type_: Type) -> str:
    """A type as the coverage report names it: ``string``, ``'nvml'``, ``IKernelReport``..."""
    if isinstance(type_, Prim):
        return type_.name
    if isinstance(type_, Literal):
        return json.dumps(type_.value).replace('"', "'")
    if isinstance(type_, Ref):
        return type_.name
    return "array" if isinstance(type_, Array) else "object"


class Contract:
    """Checks replies against the interfaces, and keeps what the replies met: each place in
    the types (``IDevice.other_users.count``, ``IDevice.problems[]``) with each type it took
    there, so that a test can ask for every declared type at every place to have turned up."""

    def __init__(self, interfaces: dict[str, Object]) -> None:
        self.interfaces = interfaces
        self.seen: set[tuple[str, str]] = set()

    def errors(self, value: Any, type_: Type, where: str, at: str) -> list[str]:
        """Why ``value`` (at ``where`` in the reply) is not ``type_`` (at ``at`` in the types);
        empty when it is."""
        found = self._errors(value, type_, where, at)
        if not found and not isinstance(type_, OneOf):
            self.seen.add((at, describe(type_)))
        return found

    def _errors(self, value: Any, type_: Type, where: str, at: str) -> list[str]:
        if isinstance(type_, Prim):
            ok = {
                "string": isinstance(value, str),
                "number": isinstance(value, (int, float)) and not isinstance(value, bool),
                "boolean": isinstance(value, bool),
                "null": value is None,
            }[type_.name]
            return [] if ok else [f"{where}: {type_.name} in api.ts, the server sent {value!r}"]
        if isinstance(type_, Literal):
            ok = type(value) is type(type_.value) and value == type_.value
            return (
                [] if ok else [f"{where}: {describe(type_)} in api.ts, the server sent {value!r}"]
            )
        if isinstance(type_, Array):
            if not isinstance(value, list):
                return [f"{where}: an array in api.ts, the server sent {value!r}"]
            return [
                error
                for i, item in enumerate(value)
                for error in self.errors(item, type_.item, f"{where}[{i}]", f"{at}[]")
            ]
        if isinstance(type_, Ref):
            if type_.name not in self.interfaces:
                return [f"{where}: api.ts names {type_.name}, which it does not declare"]
            return self.errors(value, self.interfaces[type_.name], where, type_.name)
        if isinstance(type_, Object):
            return self._object_errors(value, type_, where, at)
        return self._union_errors(value, type_, where, at)

    def _object_errors(self, value: Any, type_: Object, where: str, at: str) -> list[str]:
        if not isinstance(value, dict):
            return [f"{where}: an object ({at}) in api.ts, the server sent {value!r}"]
        found = [
            f"{where}.{key}: the server sends it, {at} in api.ts lacks it"
            for key in value
            if key not in type_.fields
        ]
        for name, field in type_.fields.items():
            if name in value:
                found += self.errors(value[name], field.type, f"{where}.{name}", f"{at}.{name}")
            elif not field.optional:
                found.append(f"{where}.{name}: required by {at} in api.ts, not sent")
        return found

    def _union_errors(self, value: Any, type_: OneOf, where: str, at: str) -> list[str]:
        tries = []
        for member in type_.members:
            seen = set(self.seen)
            errors = self.errors(value, member, where, at)
            if not errors:
                return []
            tries.append(errors)
            self.seen = seen  # a member that did not fit met nothing
        # the member of the value's kind says best what is wrong: IKernelReport for an object
        structured = [
            errors
            for member, errors in zip(type_.members, tries, strict=True)
            if isinstance(value, (dict, list)) and isinstance(member, (Ref, Object, Array))
        ]
        if len(structured) == 1:
            return structured[0]
        members = " | ".join(describe(m) for m in type_.members)
        return [f"{where}: {members} in api.ts, the server sent {value!r}"]

    def expected(self, type_: Type, at: str, visited: frozenset[str] = frozenset()) -> set:
        """What ``seen`` holds once replies met every type at every place under ``type_``; a
        ``null`` may be declared without turning up (nullable is the careful side)."""
        if isinstance(type_, OneOf):
            return set().union(*(self.expected(m, at, visited) for m in type_.members))
        if type_ == Prim("null"):
            return set()
        mark = {(at, describe(type_))}
        if isinstance(type_, Ref):
            if type_.name in visited or type_.name not in self.interfaces:
                return mark
            return mark | self.expected(
                self.interfaces[type_.name], type_.name, visited | {type_.name}
            )
        if isinstance(type_, Array):
            return mark | self.expected(type_.item, f"{at}[]", visited)
        if isinstance(type_, Object):
            return mark.union(
                *(
                    self.expected(f.type, f"{at}.{name}", visited)
                    for name, f in type_.fields.items()
                )
            )
        return mark


def load_contract() -> tuple[Contract, dict[str, str]]:
    source = API_TS.read_text()
    endpoints = endpoint_types(source)
    assert {"devices", "kernels"} <= endpoints.keys(), f"api.ts reads {endpoints}"
    return Contract(parse_interfaces(source)), endpoints


# ---------------------------------------------------------------------------------------------
# The server


async def get(jp_fetch, path: str) -> Any:  # type: ignore[no-untyped-def]
    response = await jp_fetch("vram", path)
    assert response.code == 200
    return json.loads(response.body)


async def start_kernel(jp_fetch, jp_serverapp, notebook: str | None) -> tuple[str, Any]:  # type: ignore[no-untyped-def]
    """A real python3 kernel, with a notebook session or without; its id and its manager."""
    if notebook is None:
        body = json.dumps({"name": "python3"})
        response = await jp_fetch("api", "kernels", method="POST", body=body, request_timeout=120)
        kernel_id = json.loads(response.body)["id"]
    else:
        body = json.dumps({"path": notebook, "type": "notebook", "kernel": {"name": "python3"}})
        response = await jp_fetch("api", "sessions", method="POST", body=body, request_timeout=120)
        kernel_id = json.loads(response.body)["kernel"]["id"]
    return kernel_id, jp_serverapp.kernel_manager.get_kernel(kernel_id)


async def test_devices_and_kernels_replies_are_the_types_of_api_ts(
    jp_fetch, jp_serverapp, use_recording
):
    """Every declared type at every place turns up at least once: processes of kernels and
    not, of other users, with and without a figure; kernels with and without a notebook, one
    with vram_magic's own report (torch devices, largest names, a limit, a restart request) and
    memory NVML cannot see; then every recorded machine (MIG slices, failing calls), no driver,
    and the real NVML (no GPU here; on a GPU machine, its GPUs)."""
    contract, endpoints = load_contract()
    first, second = use_recording("two_gpus_other_processes").fake.recording["devices"]
    notebook_id, notebook_kernel = await start_kernel(jp_fetch, jp_serverapp, "work/train.ipynb")
    bare_id, bare_kernel = await start_kernel(jp_fetch, jp_serverapp, None)
    notebook_pid, bare_pid = notebook_kernel.provisioner.pid, bare_kernel.provisioner.pid
    first["compute_processes"] = [
        {"pid": notebook_pid, "usedGpuMemory": 5 * GIB},
        {"pid": ABSENT_PID, "usedGpuMemory": 7 * GIB},
    ]
    second["compute_processes"] = [
        {"pid": "self", "usedGpuMemory": 2 * GIB},  # this process: ours, no kernel's
        {"pid": bare_pid, "usedGpuMemory": None},  # NVML withholds the figure
    ]
    # what vram_magic loaded in the notebook's kernel would write (the kernel has no CUDA here)
    write_status(
        status_path(notebook_kernel.connection_file),
        KernelStatus(
            pid=notebook_pid,
            updated=time.time(),
            devices=(
                KernelDevice("cuda:0", first["uuid"], 4 * GIB, 5 * GIB, 5 * GIB),
                KernelDevice("cuda:1", second["uuid"], GIB, GIB, None),  # NVML lists it not
                KernelDevice("cuda:2", None, GIB, 2 * GIB, None),  # a GPU without its UUID
            ),
            top=(("weights", 3 * GIB), ("optimizer", GIB)),
            limit=30 * GIB,
            restart="restart-request-1",
        ),
    )

    kernels = await get(jp_fetch, "kernels")
    by_id = {row["id"]: row for row in kernels["kernels"]}
    assert by_id[bare_id]["session"] is None
    assert by_id[notebook_id]["vram_magic"]["restart_request"] == "restart-request-1"
    assert {d["source"] for d in by_id[notebook_id]["devices"]} == {"nvml", "kernel"}
    machines = [*RECORDINGS, "no driver", "real NVML"]
    errors = []
    for machine in ["two GPUs with these kernels", *machines]:
        # use_recording puts the test's first NVML back afterwards, whichever was set last
        if machine == "real NVML":
            nvml.set_default_session(nvml.NvmlSession())
        elif machine == "no driver":
            nvml.set_default_session(
                fake_session({"init_error": "NVMLError_DriverNotLoaded", "devices": []})
            )
        elif machine in RECORDINGS:
            use_recording(machine)
        for path in ("devices", "kernels"):
            body = await get(jp_fetch, path)
            reply = endpoints[path]
            errors += [
                f"{machine}: {error}"
                for error in contract.errors(body, Ref(reply), f"/vram/{path}", reply)
            ]
    shown = errors[:MAX_SHOWN] + [f"... and {len(errors) - MAX_SHOWN} more"] * (
        len(errors) > MAX_SHOWN
    )
    assert not errors, "the replies and api.ts disagree:\n" + "\n".join(shown)
    roots = [Ref(endpoints[path]) for path in ("devices", "kernels")]
    missing = set().union(*(contract.expected(root, root.name) for root in roots)) - contract.seen
    assert not missing, "api.ts declares what no reply had:\n" + "\n".join(
        f"{at}: {kind}" for at, kind in sorted(missing)
    )


# ---------------------------------------------------------------------------------------------
# The parser and the check themselves


def test_the_parser_reads_every_interface_of_api_ts():
    interfaces = parse_interfaces(API_TS.read_text())
    assert {"IDevicesReply", "IDevice", "IGpuProcess", "IKernelsReply", "IKernel"} <= set(
        interfaces
    )
    device = interfaces["IDevice"].fields
    assert device["index"] == Field(Prim("string"), False)
    assert device["other_users"].type == Object(
        {"count": Field(Prim("number"), False), "bytes": Field(Prim("number"), False)}
    )
    assert device["processes"].type == Array(Ref("IGpuProcess"))
    kernel_device = interfaces["IKernelDevice"].fields
    assert kernel_device["source"].type == OneOf((Literal("nvml"), Literal("kernel")))


def test_the_parser_knows_optional_fields_nested_arrays_and_what_it_cannot_read():
    parsed = parse_interfaces(
        """
        /** a doc comment, { with braces } */
        export interface IThing {
          a?: number | null; // a trailing comment
          b: { c: string; d: boolean }[];
          e: (string | number)[][];
          f: true;
        }
        """
    )["IThing"].fields
    assert parsed["a"] == Field(OneOf((Prim("number"), Prim("null"))), True)
    assert parsed["b"].type == Array(
        Object({"c": Field(Prim("string"), False), "d": Field(Prim("boolean"), False)})
    )
    assert parsed["e"].type == Array(Array(OneOf((Prim("string"), Prim("number")))))
    assert parsed["f"].type == Literal(True)
    for unreadable in (
        "export interface IA { a: unknown }",
        "export interface IA { a: Record<string, number> }",
        "export interface IA extends IB { a: number }",
        "export interface IA { [key: string]: number }",
    ):
        with pytest.raises(SyntaxError):
            parse_interfaces(unreadable)


def test_the_check_fails_each_kind_of_drift():
    contract = Contract(
        parse_interfaces(
            """
            interface IReply { items: IItem[]; note: string | null; flag: true }
            interface IItem { id: string; size: number | null; tag?: 'a' | 'b' }
            """
        )
    )
    good = {"items": [{"id": "x", "size": 1.5, "tag": "a"}, {"id": "y", "size": None}]}
    assert contract.errors({**good, "note": None, "flag": True}, Ref("IReply"), "r", "IReply") == []
    drifts = {
        "a field the types lack": {**good, "note": None, "flag": True, "extra": 1},
        "a required field not sent": {**good, "flag": True},
        "a string for a number": {
            "items": [{"id": "x", "size": "1"}],
            "note": None,
            "flag": True,
        },
        "an id that is a number": {"items": [{"id": 3, "size": 1}], "note": "n", "flag": True},
        "a boolean for a number": {"items": [{"id": "x", "size": True}], "note": "", "flag": True},
        "a literal not declared": {
            "items": [{"id": "x", "size": 1, "tag": "c"}],
            "note": None,
            "flag": True,
        },
        "false for true": {**good, "note": None, "flag": False},
        "a nested field the types lack": {
            "items": [{"id": "x", "size": 1, "name": "n"}],
            "note": None,
            "flag": True,
        },
    }
    for drift, body in drifts.items():
        assert contract.errors(body, Ref("IReply"), "r", "IReply"), drift


def test_the_coverage_names_what_the_types_allow_and_no_reply_had():
    contract = Contract(
        parse_interfaces(
            """
            interface IReply { items: IItem[]; note: string | null }
            interface IItem { id: number | string; tag?: 'a' | 'b' }
            """
        )
    )
    for body in ({"items": [], "note": None}, {"items": [{"id": "x", "tag": "a"}], "note": "n"}):
        assert contract.errors(body, Ref("IReply"), "r", "IReply") == []
    assert contract.expected(Ref("IReply"), "IReply") - contract.seen == {
        ("IItem.id", "number"),
        ("IItem.tag", "'b'"),
    }
