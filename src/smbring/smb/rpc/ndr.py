"""NDR, the Network Data Representation (C706 chapter 14, MS-RPCE 2.2.5), as far as the
share-listing and name-lookup calls need it: little-endian 32-bit NDR; integers aligned to
their size; unique pointers as referent ids whose targets follow after the scalars of what
holds them; conformant varying strings of UTF-16; conformant arrays of bytes and of
structures; counted strings (RPC_UNICODE_STRING) and SIDs (RPC_SID, MS-DTYP 2.4.2.3).

A structure is described by the kinds of its fields (U32, STR for a unique pointer to a string,
BYTES for a unique pointer to a byte array whose size precedes it as a U32), so one description
serves to write an answer and to read (or skip) what a client sent."""
from __future__ import annotations

import struct

from smbring.smb.sids import MAX_SUB_AUTHORITIES

U32, STR, BYTES = "u32", "str", "bytes"

# a client cannot make the reader loop longer than its data allows: each element of an array
# takes at least four bytes, so a count above what is left is malformed, not a huge loop
MIN_ELEMENT_SIZE = 4


class NdrError(ValueError):
    """Stub data that is not what the operation's NDR says (the call faults)."""


class Writer:
    def __init__(self) -> None:
        self.buf = bytearray()
        self._referent = 0x00020000     # as Samba's and Windows' stubs number them

    def align(self, n: int) -> None:
        self.buf += b"\0" * (-len(self.buf) % n)

    def u16(self, value: int) -> None:
        self.align(2)
        self.buf += struct.pack("<H", value)

    def u32(self, value: int) -> None:
        self.align(4)
        self.buf += struct.pack("<I", value & 0xFFFFFFFF)

    def pointer(self, present: bool) -> None:
        """A unique pointer: a fresh referent id, or 0 for NULL (its target is written later)."""
        if present:
            self._referent += 4
            self.u32(self._referent)
        else:
            self.u32(0)

    def string(self, text: str) -> None:
        """A conformant varying string of UTF-16 with its terminator ([string] wchar_t*)."""
        chars = text.encode("utf-16-le") + b"\0\0"
        count = len(chars) // 2
        self.u32(count)      # maximum count
        self.u32(0)          # offset
        self.u32(count)      # actual count
        self.buf += chars

    def byte_array(self, data: bytes) -> None:
        """A conformant array of bytes (its size_is field was written with the scalars)."""
        self.u32(len(data))
        self.buf += data

    def counted_string(self, text: str | None, terminated_size: bool = False) -> None:
        """The scalars of an RPC_UNICODE_STRING (a structure aligned to 4, as it holds a
        pointer): Length and MaximumLength in bytes, then the unique pointer to its characters
        (`counted_chars` writes them, deferred). With `terminated_size` the maximum leaves
        room for a terminator that is not sent (Samba's lsa_StringLarge, for domain names)."""
        self.align(4)
        if text is None:
            self.u16(0)
            self.u16(0)
            self.pointer(False)
            return
        length = len(text.encode("utf-16-le"))
        self.u16(length)
        self.u16(length + 2 if terminated_size else length)
        self.pointer(True)

    def counted_chars(self, text: str | None, terminated_size: bool = False) -> None:
        """The deferred characters of a counted string (nothing for a NULL one): a
        conformant varying array of UTF-16 units, without a terminator."""
        if text is None:
            return
        chars = text.encode("utf-16-le")
        self.u32(len(chars) // 2 + (1 if terminated_size else 0))
        self.u32(0)
        self.u32(len(chars) // 2)
        self.buf += chars

    def handle(self, value: bytes) -> None:
        """A context handle (policy_handle): 20 opaque bytes, aligned to 4."""
        self.align(4)
        self.buf += value

    def sid(self, value: bytes) -> None:
        """An RPC_SID (a conformant structure: its sub-authority count first, as the
        conformance), from a SID in its binary form."""
        self.u32(value[1])
        self.buf += value

    def structs(self, kinds: tuple, rows: list[tuple]) -> None:
        """Structures laid out in a row, as in an array: every structure's scalars first, then
        what their pointers point to, in order."""
        for row in rows:
            for kind, value in zip(kinds, row):
                if kind == U32:
                    self.u32(value)
                else:
                    self.pointer(value is not None)
        for row in rows:
            for kind, value in zip(kinds, row):
                if kind == STR and value is not None:
                    self.string(value)
                elif kind == BYTES and value is not None:
                    self.byte_array(value)

    def info_answer(self, level: int, arms: frozenset, kinds: tuple | None, row: tuple | None,
                    status: int) -> None:
        """A *GetInfo call's answer: a union of unique pointers to the structure of each level
        ([switch_is(level)]), then the WERROR. The level, then its arm: the structure `row`
        (`kinds`), a NULL pointer when there is none (a refusal), nothing where the union has
        no arm for the level (its NDR has no room for one)."""
        self.u32(level)
        if row is not None:
            self.pointer(True)
            self.structs(kinds, [row])
        elif level in arms:
            self.pointer(False)
        self.u32(status)

    def getvalue(self) -> bytes:
        return bytes(self.buf)


class Reader:
    def __init__(self, data) -> None:
        self.data = bytes(data)
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise NdrError("stub data ends early")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def align(self, n: int) -> None:
        self._take(-self.pos % n)

    def skip(self, n: int) -> None:
        """Reads over `n` bytes (NdrError where fewer are left)."""
        self._take(n)

    def u16(self) -> int:
        self.align(2)
        return struct.unpack("<H", self._take(2))[0]

    def u32(self) -> int:
        self.align(4)
        return struct.unpack("<I", self._take(4))[0]

    def u8(self) -> int:
        return self._take(1)[0]

    def handle(self) -> bytes:
        """A context handle (policy_handle): 20 opaque bytes, aligned to 4."""
        self.align(4)
        return self._take(20)

    def pointer(self) -> int:
        """A unique pointer's referent id (0: NULL)."""
        return self.u32()

    def string(self) -> str:
        """A conformant varying string of UTF-16 (its terminator, if sent, dropped)."""
        maximum, offset, actual = self.u32(), self.u32(), self.u32()
        if offset != 0 or actual > maximum:
            raise NdrError("bad string bounds")
        try:
            text = self._take(2 * actual).decode("utf-16-le")
        except UnicodeDecodeError:
            raise NdrError("a string that is not UTF-16") from None
        return text[:-1] if text.endswith("\0") else text

    def unique_string(self) -> str | None:
        return self.string() if self.pointer() else None

    def counted_string(self) -> tuple[int, int, int]:
        """An RPC_UNICODE_STRING's scalars: (Length, MaximumLength, referent id)."""
        self.align(4)
        length, maximum = self.u16(), self.u16()
        return length, maximum, self.pointer()

    def counted_chars(self, length: int, maximum: int, limit: int) -> str:
        """A counted string's deferred characters, checked against its scalars as NDR
        requires (sizes even, length within the maximum, the array's bounds the same);
        NdrError past `limit` characters."""
        if length % 2 or maximum % 2 or length > maximum:
            raise NdrError("a counted string with bad lengths")
        size, offset, actual = self.u32(), self.u32(), self.u32()
        if size != maximum // 2 or offset != 0 or actual != length // 2:
            raise NdrError("a counted string's array does not match its lengths")
        if actual > limit:
            raise NdrError(f"a string of {actual} characters (at most {limit})")
        try:
            return self._take(length).decode("utf-16-le")
        except UnicodeDecodeError:
            raise NdrError("a string that is not UTF-16") from None

    def sid(self) -> bytes:
        """An RPC_SID, in its binary form (MS-DTYP 2.4.2.2)."""
        count = self.u32()
        head = self._take(8)
        if head[0] != 1 or head[1] != count or count > MAX_SUB_AUTHORITIES:
            raise NdrError("a malformed SID")
        return head + self._take(4 * count)

    def byte_array(self, size: int) -> bytes:
        if self.u32() != size:
            raise NdrError("a byte array whose size does not match")
        return self._take(size)

    def count(self) -> int:
        """An array's element count, bounded by the data left (see MIN_ELEMENT_SIZE)."""
        n = self.u32()
        if n * MIN_ELEMENT_SIZE > len(self.data) - self.pos:
            raise NdrError("an array longer than the data")
        return n

    def structs(self, kinds: tuple, count: int) -> list[tuple]:
        """`count` structures laid out as Writer.structs writes them."""
        rows = []
        for _ in range(count):
            rows.append([self.u32() for _kind in kinds])
        for row in rows:
            size = None
            for i, kind in enumerate(kinds):
                if kind == U32:
                    size = row[i]         # (a BYTES field's size is the U32 before it)
                elif not row[i]:
                    row[i] = None
                elif kind == STR:
                    row[i] = self.string()
                else:
                    row[i] = self.byte_array(size if size is not None else -1)
        return [tuple(r) for r in rows]
