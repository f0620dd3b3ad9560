"""A small reader of the kernel's BTF (/sys/kernel/btf/vmlinux).

netprof compiles its BPF programs without kernel headers, so everything it needs to know about
kernel structs and enums comes from here: field offsets (passed to the programs as -D macros)
and enum values (drop reasons, softirq vectors) that differ between kernel versions.

Only what netprof asks for is decoded; the whole file is walked once to index where each type
starts (≈80 ms for the 6.18 vmlinux BTF, ~126k types).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import NetprofError
from .kernel_files import read_kernel_bytes

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
# vmlinux BTF is ≈5.5 MB on 6.18; the cap only stops a planted endless file.
BTF_MAX_BYTES = 256 << 20

BTF_MAGIC = 0xEB9F

# BTF kinds (include/uapi/linux/btf.h).
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

# Bytes that follow the 12-byte btf_type header: a fixed part, plus a part per vlen item.
_FIXED_EXTRA = {KIND_INT: 4, KIND_ARRAY: 12, KIND_VAR: 4, KIND_DECL_TAG: 4}
_PER_ITEM_EXTRA = {
    KIND_STRUCT: 12,
    KIND_UNION: 12,
    KIND_ENUM: 8,
    KIND_FUNC_PROTO: 8,
    KIND_DATASEC: 12,
    KIND_ENUM64: 12,
}
# Kinds that only qualify another type; a member's type is looked through them.
_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}


class BtfError(NetprofError):
    """BTF is missing, malformed, or lacks what netprof needs."""


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int


class Btf:
    """Index over one BTF blob. Type ids start at 1; id 0 is void."""

    def __init__(self, data: bytes):
        if len(data) < 24:
            raise BtfError("BTF blob is too short")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", data, 0
        )
        if magic != BTF_MAGIC:
            raise BtfError(f"not BTF (magic {magic:#x}); big-endian BTF is not supported")
        self._data = data
        self._strings_start = hdr_len + str_off
        self._strings_end = self._strings_start + str_len
        self._type_pos: list[int] = [0]  # index = type id; id 0 (void) has no record
        self._name_off: list[int] = [0]
        pos = hdr_len + type_off
        end = pos + type_len
        unpack = struct.unpack_from
        fixed, per_item = _FIXED_EXTRA, _PER_ITEM_EXTRA
        type_pos, name_offs = self._type_pos, self._name_off
        while pos < end:
            name_off, info, _ = unpack("<III", data, pos)
            kind = (info >> 24) & 0x1F
            type_pos.append(pos)
            name_offs.append(name_off)
            pos += 12 + fixed.get(kind, 0) + per_item.get(kind, 0) * (info & 0xFFFF)
        self._by_name: dict[str, list[int]] | None = None

    @classmethod
    def from_file(cls, path: Path = VMLINUX_BTF) -> "Btf":
        try:
            return cls(read_kernel_bytes(path, BTF_MAX_BYTES))
        except FileNotFoundError:
            raise BtfError(f"no BTF at {path} (kernel built without CONFIG_DEBUG_INFO_BTF)") from None
        except PermissionError:
            raise BtfError(f"cannot read {path}: permission denied (run as root)") from None
        except OSError as exc:  # a FIFO or device planted there, or over the cap
            raise BtfError(f"cannot read {path}: {exc.strerror}") from None

    # -- low level -------------------------------------------------------------------------
    def _string(self, off: int) -> str:
        start = self._strings_start + off
        end = self._data.index(b"\0", start, self._strings_end)
        return self._data[start:end].decode("ascii", "replace")

    def _header(self, type_id: int) -> tuple[int, int, int, int]:
        """(kind, vlen, kind_flag, size_or_type) of a type."""
        pos = self._type_pos[type_id]
        _, info, size_or_type = struct.unpack_from("<III", self._data, pos)
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, size_or_type

    def kind(self, type_id: int) -> int:
        return self._header(type_id)[0]

    def name(self, type_id: int) -> str:
        return self._string(self._name_off[type_id]) if type_id else ""

    @property
    def type_count(self) -> int:
        return len(self._type_pos) - 1

    def find(self, name: str, kinds: set[int]) -> int:
        """Type id of the first type called `name` whose kind is in `kinds`."""
        if self._by_name is None:
            # Built on first use: a reader that only walks members never pays for it.
            self._by_name = {}
            for type_id, off in enumerate(self._name_off):
                if off:
                    self._by_name.setdefault(self._string(off), []).append(type_id)
        for type_id in self._by_name.get(name, []):
            if self.kind(type_id) in kinds:
                return type_id
        raise BtfError(f"kernel BTF has no {_kind_words(kinds)} named {name!r}")

    def resolve(self, type_id: int) -> int:
        """Look through typedefs and qualifiers."""
        while type_id and self.kind(type_id) in _MODIFIERS:
            type_id = self._header(type_id)[3]
        return type_id

    def size(self, type_id: int) -> int:
        type_id = self.resolve(type_id)
        kind, _vlen, _kf, size_or_type = self._header(type_id)
        if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT):
            return size_or_type
        if kind == KIND_PTR:
            return 8
        if kind == KIND_ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._data, self._type_pos[type_id] + 12)
            return self.size(elem) * nelems
        raise BtfError(f"type {self.name(type_id)!r} (kind {kind}) has no size")

    def members(self, type_id: int) -> list[Member]:
        type_id = self.resolve(type_id)
        kind, vlen, kind_flag, _ = self._header(type_id)
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BtfError(f"type {self.name(type_id)!r} is not a struct or union")
        out = []
        base = self._type_pos[type_id] + 12
        for i in range(vlen):
            name_off, member_type, offset = struct.unpack_from("<III", self._data, base + 12 * i)
            if kind_flag:
                out.append(Member(self._string(name_off), member_type, offset & 0xFFFFFF, offset >> 24))
            else:
                out.append(Member(self._string(name_off), member_type, offset, 0))
        return out

    # -- what netprof asks -------------------------------------------------------------------
    def field_offset(self, struct_name: str, path: str) -> int:
        """Byte offset of a dotted member path, e.g. ("sock", "__sk_common.skc_net").

        Anonymous unions and structs are searched through, because many fields netprof reads
        (skc_num, skc_net, …) live inside them.
        """
        type_id = self.find(struct_name, {KIND_STRUCT, KIND_UNION})
        bit_offset = 0
        for part in path.split("."):
            found = self._find_member(type_id, part)
            if found is None:
                raise BtfError(f"kernel BTF: struct {struct_name} has no member {path!r}")
            member_bits, member_type = found
            bit_offset += member_bits
            type_id = self.resolve(member_type)
        if bit_offset % 8:
            raise BtfError(f"{struct_name}.{path} is a bitfield; netprof reads whole bytes only")
        return bit_offset // 8

    def _find_member(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of `name` in a struct/union, looking into anonymous members."""
        for member in self.members(type_id):
            if member.name == name:
                return member.bit_offset, member.type_id
            if not member.name:
                inner = self.resolve(member.type_id)
                if self.kind(inner) in (KIND_STRUCT, KIND_UNION):
                    found = self._find_member(inner, name)
                    if found is not None:
                        return member.bit_offset + found[0], found[1]
        return None

    def raw_tracepoint_params(self, tracepoint: str) -> tuple[str, ...] | None:
        """The arguments a raw tracepoint passes its programs (ctx->args[0], [1], …), each
        spelled as its C type ("struct sk_buff *", "enum skb_drop_reason"), from the
        kernel's `btf_trace_<tracepoint>` typedef; None where BTF has no such typedef.

        This is the prototype the kernel checks a raw tracepoint program's ctx reads
        against (a read past the last argument refuses the attach with EINVAL), so it is
        the authority for which arguments exist, where the tracefs format file is only a
        description of the perf-event record (and may be unreadable)."""
        typedef = self.raw_tracepoint_type_id(tracepoint)
        if typedef is None:
            return None
        pointer = self._header(typedef)[3]
        proto = self._header(pointer)[3] if self.kind(pointer) == KIND_PTR else 0
        if not proto or self.kind(proto) != KIND_FUNC_PROTO:
            return None
        vlen = self._header(proto)[1]
        base = self._type_pos[proto] + 12
        params = [struct.unpack_from("<II", self._data, base + 8 * i)[1] for i in range(vlen)]
        # The first parameter is the tracepoint's own `void *__data`, not one of its arguments.
        return tuple(self.spelling(type_id) for type_id in params[1:])

    def raw_tracepoint_type_id(self, tracepoint: str) -> int | None:
        """Type id of the `btf_trace_<tracepoint>` typedef, None where BTF has none: the id a
        tp_btf program is loaded against (attach_btf_id)."""
        try:
            return self.find(f"btf_trace_{tracepoint}", {KIND_TYPEDEF})
        except BtfError:
            return None

    def function_type_id(self, function: str) -> int | None:
        """Type id of the kernel function `function` (BTF_KIND_FUNC), None where BTF has none
        (not built in, or inlined everywhere): the id an fentry program is loaded against."""
        try:
            return self.find(function, {KIND_FUNC})
        except BtfError:
            return None

    def spelling(self, type_id: int) -> str:
        """A type as C writes it, qualifiers and typedefs looked through: "struct sock *",
        "enum skb_drop_reason", "void *", "unsigned int"."""
        type_id = self.resolve(type_id)
        if not type_id:
            return "void"
        kind = self.kind(type_id)
        if kind == KIND_PTR:
            target = self.spelling(self._header(type_id)[3])
            return f"{target}*" if target.endswith("*") else f"{target} *"
        prefix = {KIND_STRUCT: "struct ", KIND_UNION: "union ", KIND_ENUM: "enum ", KIND_ENUM64: "enum "}
        return prefix.get(kind, "") + (self.name(type_id) or "(anonymous)")

    def enum(self, enum_name: str) -> dict[str, int]:
        """Name → value of an enum (ENUM or ENUM64)."""
        return self._enum_values(self.find(enum_name, {KIND_ENUM, KIND_ENUM64}))

    def enum_containing(self, enumerator: str) -> dict[str, int]:
        """The enum that defines `enumerator`, for anonymous enums such as the softirq
        vectors (`enum { HI_SOFTIRQ = 0, …, NET_RX_SOFTIRQ, … }` has no name)."""
        for type_id in range(1, self.type_count + 1):
            if self.kind(type_id) in (KIND_ENUM, KIND_ENUM64):
                values = self._enum_values(type_id)
                if enumerator in values:
                    return values
        raise BtfError(f"kernel BTF has no enum defining {enumerator}")

    def _enum_values(self, type_id: int) -> dict[str, int]:
        kind, vlen, kind_flag, _ = self._header(type_id)
        base = self._type_pos[type_id] + 12
        values: dict[str, int] = {}
        for i in range(vlen):
            if kind == KIND_ENUM:
                name_off, raw = struct.unpack_from("<II", self._data, base + 8 * i)
                value = raw - (1 << 32) if kind_flag and raw >= 1 << 31 else raw
            else:
                name_off, lo, hi = struct.unpack_from("<III", self._data, base + 12 * i)
                value = (hi << 32) | lo
            values[self._string(name_off)] = value
        return values


def _kind_words(kinds: set[int]) -> str:
    if kinds <= {KIND_STRUCT, KIND_UNION}:
        return "struct"
    if kinds <= {KIND_ENUM, KIND_ENUM64}:
        return "enum"
    return "type"
