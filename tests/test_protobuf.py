"""flarelab.protobuf against the official protobuf runtime (protoc-generated, same .proto)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference_pb import pb2

from flarelab.errors import LocalProtocolError
from flarelab.pb import crypto
from flarelab.protobuf import MAX_DEPTH, DecodeError, Field, Message

ref = pb2("kinds")


class Inner(Message):
    blob = Field(1, "bytes")
    names = Field(2, "string", repeated=True)


class Kinds(Message):
    i32 = Field(1, "int32")
    i64 = Field(2, "int64")
    u32 = Field(3, "uint32")
    u64 = Field(4, "uint64")
    s32 = Field(5, "sint32")
    s64 = Field(6, "sint64")
    flag = Field(7, "bool")
    f32 = Field(8, "fixed32")
    f64 = Field(9, "fixed64")
    sf32 = Field(10, "sfixed32")
    sf64 = Field(11, "sfixed64")
    dbl = Field(12, "double")
    flt = Field(13, "float")
    text = Field(14, "string")
    data = Field(15, "bytes")
    inner = Field(16, "message", message=Inner)
    inners = Field(17, "message", message=Inner, repeated=True)
    nums = Field(18, "uint64", repeated=True)
    packed_nums = Field(19, "sint32", repeated=True, packed=True)
    must = Field(20, "uint32", required=True)


I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
FLOAT32 = st.floats(width=32, allow_nan=False)
inner_st = st.builds(
    dict, blob=st.none() | st.binary(max_size=20), names=st.lists(st.text(max_size=8), max_size=3)
)
kinds_st = st.fixed_dictionaries(
    {"must": U32},
    optional={
        "i32": I32, "i64": I64, "u32": U32, "u64": U64, "s32": I32, "s64": I64,
        "flag": st.booleans(), "f32": U32, "f64": U64, "sf32": I32, "sf64": I64,
        "dbl": st.floats(allow_nan=False), "flt": FLOAT32, "text": st.text(max_size=20),
        "data": st.binary(max_size=40), "inner": inner_st,
        "inners": st.lists(inner_st, max_size=3), "nums": st.lists(U64, max_size=4),
        "packed_nums": st.lists(I32, max_size=4),
    },
)


def _ours(values: dict[str, Any]) -> Kinds:
    v = dict(values)
    if "inner" in v:
        v["inner"] = Inner(**{k: x for k, x in v["inner"].items() if x is not None})
    if "inners" in v:
        v["inners"] = [Inner(**{k: x for k, x in i.items() if x is not None}) for i in v["inners"]]
    return Kinds(**v)


def _theirs(values: dict[str, Any]) -> Any:
    msg = ref.Kinds()
    for key, value in values.items():
        if key == "inner":
            msg.inner.SetInParent()
            if value["blob"] is not None:
                msg.inner.blob = value["blob"]
            msg.inner.names.extend(value["names"])
        elif key == "inners":
            for item in value:
                sub = msg.inners.add()
                if item["blob"] is not None:
                    sub.blob = item["blob"]
                sub.names.extend(item["names"])
        elif isinstance(value, list):
            getattr(msg, key).extend(value)
        else:
            setattr(msg, key, value)
    return msg


@given(kinds_st)
def test_encoding_matches_protoc_byte_for_byte(values: dict[str, Any]) -> None:
    ours = _ours(values).encode()
    assert ours == _theirs(values).SerializeToString(deterministic=True)
    back = Kinds.decode(ours)
    assert back == _ours(values)


@given(kinds_st)
def test_decodes_what_protoc_encodes(values: dict[str, Any]) -> None:
    assert Kinds.decode(_theirs(values).SerializeToString()) == _ours(values)


@given(st.binary(max_size=120))
def test_fuzz_decode_agrees_with_protoc(data: bytes) -> None:
    try:
        ours = Kinds.decode(data)
    except DecodeError:
        ours = None
    try:
        theirs = ref.Kinds.FromString(data)
    except Exception:
        theirs = None
    if ours is not None:
        # anything we accept, protoc accepts, with the same meaning
        assert theirs is not None
        assert Kinds.decode(theirs.SerializeToString()) == ours


def test_unpacked_and_packed_repeated_both_read() -> None:
    packed = bytes([0xA0, 0x01, 0]) + bytes([0x92, 0x01, 3, 1, 2, 3])  # must=0; nums 1,2,3
    assert Kinds.decode(packed).nums == [1, 2, 3]
    unpacked = bytes([0xA0, 0x01, 0, 0x90, 0x01, 7, 0x90, 0x01, 8])
    assert Kinds.decode(unpacked).nums == [7, 8]


def test_limits_and_errors() -> None:
    with pytest.raises(DecodeError, match="required field 'must'"):
        Kinds.decode(b"")
    with pytest.raises(DecodeError, match="truncated"):
        Kinds.decode(b"\x08")
    with pytest.raises(DecodeError, match="runs past the end"):
        Kinds.decode(b"\x7a\x05ab")
    with pytest.raises(DecodeError, match="groups"):
        Kinds.decode(b"\x0b")
    with pytest.raises(DecodeError, match="not UTF-8"):
        Kinds.decode(bytes([0xA0, 0x01, 0, 0x72, 1, 0xFF]))
    with pytest.raises(DecodeError, match="wire type"):
        Kinds.decode(bytes([0xA0, 0x01, 0, 0x0A, 0]))  # i32 sent length-delimited
    with pytest.raises(LocalProtocolError, match="required"):
        Kinds().encode()
    with pytest.raises(LocalProtocolError, match="out of range"):
        Kinds(must=2**32).encode()
    with pytest.raises(LocalProtocolError, match="no field"):
        Kinds(nope=1)

    class Nest(Message):
        child = Field(1, "message", message="Nest")

    Nest._by_number[1].message = Nest
    deep = b""
    for _ in range(MAX_DEPTH + 2):
        deep = b"\x0a" + bytes([len(deep)]) + deep if len(deep) < 128 else deep
    with pytest.raises(DecodeError, match="nested deeper"):
        Nest.decode(deep)


def test_unknown_fields_are_skipped() -> None:
    data = bytes([0xA0, 0x01, 5]) + b"\xf8\x07\x01" + b"\x82\x08\x02hi"  # fields 127, 128
    assert Kinds.decode(data).must == 5


_PROTO_FIELD = re.compile(
    r"^\s*(optional|required|repeated)?\s*([\w.]+)\s+(\w+)\s*=\s*(\d+)", re.MULTILINE
)
_SCALARS = {
    "int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "fixed32",
    "fixed64", "sfixed32", "sfixed64", "double", "float", "string", "bytes",
}


def _proto_messages(path: Path) -> dict[str, dict[str, tuple[int, str, str]]]:
    text = path.read_text()
    enums = set(re.findall(r"enum\s+(\w+)", text))
    messages: dict[str, dict[str, tuple[int, str, str]]] = {}
    for match in re.finditer(r"message\s+(\w+)\s*\{", text):
        name = match.group(1)
        depth, i = 1, match.end()
        start = i
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[start : i - 1]
        body = re.sub(r"message\s+\w+\s*\{[^}]*\}", "", body)  # nested messages apart
        fields = {}
        for label, kind, fname, number in _PROTO_FIELD.findall(body):
            short = kind.split(".")[-1]
            kind = short if short in _SCALARS else ("enum" if short in enums else "message")
            fields[fname] = (int(number), kind, label or "optional")
        messages[name] = fields
    return messages


PB_MODULES = sorted(
    p.stem for p in Path(crypto.__file__).parent.glob("*.proto")
)


def test_every_proto_file_has_its_declarations() -> None:
    assert {"crypto", "envelope", "identify", "noise", "peer_record"} <= set(PB_MODULES)
    for name in PB_MODULES:
        assert (Path(crypto.__file__).parent / f"{name}.py").exists(), name


@pytest.mark.parametrize("name", PB_MODULES)
def test_declarations_match_the_proto_files(name: str) -> None:
    module = importlib.import_module(f"flarelab.pb.{name}")
    proto = Path(module.__file__).with_suffix(".proto")
    declared = {
        name: cls
        for name, cls in vars(module).items()
        if isinstance(cls, type) and issubclass(cls, Message) and cls.__module__ == module.__name__
    }
    expected = _proto_messages(proto)
    assert set(declared) == set(expected)
    for name, cls in declared.items():
        got = {}
        for f in cls._fields:
            label = "repeated" if f.repeated else ("required" if f.required else "optional")
            got[f.name] = (f.number, f.kind, label)
        want = expected[name]
        # envelope.public_key is a message on the wire, kept as raw bytes on purpose
        if name == "Envelope":
            want["public_key"] = (1, "bytes", "optional")
        assert got == want, name
