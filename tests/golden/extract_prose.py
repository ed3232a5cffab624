#!/usr/bin/env python3
"""Extract Jane Austen's novels from the Debian package r-cran-janeaustenr.

Usage:
    extract_prose.py DEB_EXTRACT_DIR OUT_DIR

DEB_EXTRACT_DIR is a directory into which the .deb was unpacked, e.g.

    cd /tmp && apt-get download r-cran-janeaustenr \
        && dpkg -x r-cran-janeaustenr_*.deb /tmp/janeaustenr
    python3 tests/golden/extract_prose.py /tmp/janeaustenr /tmp/prose

(the package's own root, or any directory above it, also works).  One UTF-8
text file per novel is written to OUT_DIR (pride_and_prejudice.txt, emma.txt,
...): the novel's lines, as stored in the R data, joined with "\n", with a
final newline.

Dependencies: the Python 3 standard library only (>= 3.8).  R is not needed:
this file contains a small reader for R's XDR serialization format
(format version 2 and 3), for R's lazy-load databases (data/Rdata.rdx +
data/Rdata.rdb, which is what the Debian package ships) and for plain
.rda/.RData/.rds files (gzip, bzip2, xz or uncompressed), in case a later
version of the package ships those instead.

Exit status: 0 on success, 1 if no novel was found, 2 on usage errors.
"""

import bz2
import gzip
import lzma
import os
import struct
import sys
import zlib

# Variable names used by janeaustenr -> output file stem.
NOVELS = {
    "prideprejudice": "pride_and_prejudice",
    "sensesensibility": "sense_and_sensibility",
    "mansfieldpark": "mansfield_park",
    "emma": "emma",
    "northangerabbey": "northanger_abbey",
    "persuasion": "persuasion",
}


class RFormatError(Exception):
    pass


# ---------------------------------------------------------------------------
# R serialization (XDR, format 'X') reader.  Only what data objects need.
# ---------------------------------------------------------------------------

NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP = 7, 8, 9, 10
INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP = 13, 14, 15, 16, 17
VECSXP, EXPRSXP, BCODESXP, EXTPTRSXP, WEAKREFSXP, RAWSXP, S4SXP = (
    19, 20, 21, 22, 23, 24, 25)
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP = 255, 254, 253, 252
MISSINGARG_SXP, BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP = 251, 250, 249, 248
PERSISTSXP, EMPTYENV_SXP, BASEENV_SXP = 247, 242, 241
ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP = 240, 239, 238

NA_INT = -2147483648


class RObj:
    """A generic R object: type code, value, attributes (dict)."""

    def __init__(self, rtype, value=None, attrs=None):
        self.rtype = rtype
        self.value = value
        self.attrs = attrs or {}

    def __repr__(self):
        return "RObj(%d, %r)" % (self.rtype, self.value)


class RReader:
    def __init__(self, data):
        self.buf = data
        self.pos = 0
        self.refs = []
        fmt = self._take(2)
        if fmt != b"X\n":
            raise RFormatError("unsupported R serialization format %r "
                               "(only XDR 'X' is handled)" % fmt)
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            n = self.int()
            self.native_encoding = self._take(n).decode("ascii", "replace")
        elif version == 2:
            self.native_encoding = "latin1"
        else:
            raise RFormatError("unsupported serialization version %d" % version)

    # -- primitives --
    def _take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise RFormatError("truncated R data")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self):
        return struct.unpack(">i", self._take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + (lo & 0xFFFFFFFF)
        return n

    def charsxp(self, levels):
        n = self.int()
        if n == -1:
            return None  # NA_character_
        raw = self._take(n)
        if levels & (1 << 1):  # BYTES
            return raw
        if levels & (1 << 2):  # LATIN1
            return raw.decode("latin-1")
        if levels & ((1 << 3) | (1 << 6)):  # UTF8 / ASCII
            return raw.decode("utf-8", "replace")
        # native encoding
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    # -- items --
    def item(self):
        flags = self.int()
        t = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if t == NILVALUE_SXP:
            return None
        if t in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP,
                 MISSINGARG_SXP, BASENAMESPACE_SXP):
            return RObj(t)
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            return self.refs[idx - 1]
        if t == PERSISTSXP:
            names = self._strsxp_body()
            o = RObj(t, names)
            self.refs.append(o)
            return o
        if t == SYMSXP:
            name = self.item()  # a CHARSXP
            o = RObj(SYMSXP, name)
            self.refs.append(o)
            return o
        if t in (NAMESPACESXP, PACKAGESXP):
            o = RObj(t, self._strsxp_body())
            self.refs.append(o)
            return o
        if t == ENVSXP:
            self.int()  # locked
            o = RObj(ENVSXP, {})
            self.refs.append(o)
            enclos = self.item()
            frame = self.item()
            hashtab = self.item()
            attrib = self.item()
            o.value = {"enclos": enclos, "frame": frame, "hashtab": hashtab}
            o.attrs = self._attr_dict(attrib)
            return o
        if t in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP,
                 ATTRLANGSXP, ATTRLISTSXP):
            # Pairlist: read iteratively along the CDR chain.
            cells = []
            while True:
                attrs = self._attr_dict(self.item()) if has_attr else {}
                tag = self.item() if has_tag else None
                car = self.item()
                cells.append((tag, car, attrs))
                # peek at the CDR's flags: continue the loop if it is
                # another cell of the same kind, otherwise read it as an item.
                save = self.pos
                nflags = self.int()
                nt = nflags & 0xFF
                if nt in (LISTSXP, LANGSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP):
                    has_attr = bool(nflags & (1 << 9))
                    has_tag = bool(nflags & (1 << 10))
                    continue
                self.pos = save
                tail = self.item()
                if tail is not None:
                    cells.append((None, tail, {}))
                return RObj(t, cells)
        if t == CHARSXP:
            return self.charsxp(levels)
        if t in (LGLSXP, INTSXP):
            n = self.length()
            v = list(struct.unpack(">%di" % n, self._take(4 * n)))
            return self._with_attrs(RObj(t, v), has_attr)
        if t == REALSXP:
            n = self.length()
            v = list(struct.unpack(">%dd" % n, self._take(8 * n)))
            return self._with_attrs(RObj(t, v), has_attr)
        if t == CPLXSXP:
            n = self.length()
            v = struct.unpack(">%dd" % (2 * n), self._take(16 * n))
            v = [complex(v[2 * i], v[2 * i + 1]) for i in range(n)]
            return self._with_attrs(RObj(t, v), has_attr)
        if t == STRSXP:
            n = self.length()
            v = [self.item() for _ in range(n)]
            return self._with_attrs(RObj(t, v), has_attr)
        if t in (VECSXP, EXPRSXP):
            n = self.length()
            v = [self.item() for _ in range(n)]
            return self._with_attrs(RObj(t, v), has_attr)
        if t == RAWSXP:
            n = self.length()
            return self._with_attrs(RObj(t, self._take(n)), has_attr)
        if t == S4SXP:
            return self._with_attrs(RObj(t), has_attr)
        if t == ALTREP_SXP:
            info = self.item()
            state = self.item()
            attr = self.item()
            return self._altrep(info, state, self._attr_dict(attr))
        if t in (SPECIALSXP, BUILTINSXP):
            n = self.int()
            return RObj(t, self._take(n).decode("ascii", "replace"))
        raise RFormatError("unsupported R object type %d" % t)

    def _strsxp_body(self):
        if self.int() != 0:
            raise RFormatError("bad persistent string header")
        n = self.int()
        return [self.item() for _ in range(n)]

    def _with_attrs(self, obj, has_attr):
        if has_attr:
            obj.attrs = self._attr_dict(self.item())
        return obj

    @staticmethod
    def _attr_dict(pl):
        out = {}
        if isinstance(pl, RObj) and isinstance(pl.value, list):
            for tag, car, _ in pl.value:
                if isinstance(tag, RObj) and tag.rtype == SYMSXP:
                    out[tag.value] = car
        return out

    @staticmethod
    def _altrep(info, state, attrs):
        cls = None
        if isinstance(info, RObj) and info.value:
            sym = info.value[0][1]
            if isinstance(sym, RObj):
                cls = sym.value
        if cls == "compact_intseq" and isinstance(state, RObj):
            n, start, inc = state.value[:3]
            v = [int(start + i * inc) for i in range(int(n))]
            return RObj(INTSXP, v, attrs)
        if cls == "compact_realseq" and isinstance(state, RObj):
            n, start, inc = state.value[:3]
            return RObj(REALSXP, [start + i * inc for i in range(int(n))], attrs)
        if cls and cls.startswith("wrap_") and isinstance(state, RObj):
            inner = state.value[0][1] if state.rtype == LISTSXP else state
            if isinstance(inner, RObj):
                return RObj(inner.rtype, inner.value, attrs or inner.attrs)
        if cls == "deferred_string" and isinstance(state, RObj):
            arg = state.value[0][1] if state.rtype == LISTSXP else state
            if isinstance(arg, RObj):
                return RObj(STRSXP, [None if x is None or x == NA_INT else str(x)
                                     for x in arg.value], attrs)
        return RObj(ALTREP_SXP, (cls, state), attrs)


def unserialize(data):
    return RReader(data).item()


# ---------------------------------------------------------------------------
# Containers: lazy-load DB, .rda, .rds
# ---------------------------------------------------------------------------

def decompress_any(data):
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def named_list(obj):
    """VECSXP with names attribute -> dict."""
    names = obj.attrs.get("names")
    if names is None:
        raise RFormatError("expected a named list")
    return dict(zip(names.value, obj.value))


def lazyload_db(rdx_path):
    """Read all variables of an R lazy-load database (X.rdx + X.rdb)."""
    rdb_path = rdx_path[:-4] + ".rdb"
    with open(rdx_path, "rb") as f:
        index = named_list(unserialize(decompress_any(f.read())))
    with open(rdb_path, "rb") as f:
        rdb = f.read()
    variables = named_list(index["variables"])
    compressed = index.get("compressed")
    ctype = 1
    if compressed is not None and compressed.value:
        ctype = int(compressed.value[0])  # TRUE(1)=zlib, 2=bzip2, 3=xz

    out = {}
    for name, where in variables.items():
        off, n = int(where.value[0]), int(where.value[1])
        chunk = rdb[off:off + n]
        if len(chunk) != n or n < 4:
            raise RFormatError("bad lazy-load chunk for %s" % name)
        ulen = struct.unpack(">I", chunk[:4])[0]
        body = chunk[4:]
        if ctype in (2, 3):
            kind = body[:1]
            body = body[1:]
            if kind == b"Z":
                raw = zlib.decompress(body)
            elif kind == b"2":
                raw = bz2.decompress(body)
            elif kind == b"X":
                raw = lzma.decompress(body, format=lzma.FORMAT_XZ)
            elif kind == b"0":
                raw = body
            else:
                raise RFormatError("unknown chunk compression %r" % kind)
        else:
            raw = zlib.decompress(body)
        if len(raw) != ulen:
            raise RFormatError("chunk length mismatch for %s" % name)
        out[name] = unserialize(raw)
    return out


def rda_file(path):
    with open(path, "rb") as f:
        data = decompress_any(f.read())
    if data[:5] in (b"RDX2\n", b"RDX3\n"):
        pl = unserialize(data[5:])
        out = {}
        for tag, car, _ in pl.value:
            if isinstance(tag, RObj):
                out[tag.value] = car
        return out
    if data[:2] == b"X\n":  # .rds: a single object, named after the file
        name = os.path.basename(path).rsplit(".", 1)[0]
        return {name: unserialize(data)}
    raise RFormatError("%s: not an R data file (only XDR format handled)" % path)


def find_objects(root):
    """All R objects found under root, as {name: RObj}."""
    found = {}
    for dirpath, _, files in os.walk(root):
        for fn in sorted(files):
            p = os.path.join(dirpath, fn)
            low = fn.lower()
            try:
                if low.endswith(".rdx") and os.path.basename(dirpath) == "data":
                    if os.path.exists(p[:-4] + ".rdb"):
                        found.update(lazyload_db(p))
                elif low.endswith((".rda", ".rdata")):
                    found.update(rda_file(p))
                elif low.endswith(".rds") and os.path.basename(dirpath) == "data" \
                        and fn.rsplit(".", 1)[0] in NOVELS:
                    found.update(rda_file(p))
            except (RFormatError, OSError, zlib.error, lzma.LZMAError,
                    EOFError, ValueError, struct.error) as e:
                print("warning: skipping %s: %s" % (p, e), file=sys.stderr)
    return found


def novel_lines(obj):
    """Character vector -> list of str (NA -> empty line)."""
    if not isinstance(obj, RObj):
        return None
    if obj.rtype == STRSXP:
        return ["" if s is None else (s.decode("utf-8", "replace")
                                      if isinstance(s, bytes) else s)
                for s in obj.value]
    return None


def main(argv):
    if len(argv) != 3:
        print("usage: extract_prose.py DEB_EXTRACT_DIR OUT_DIR", file=sys.stderr)
        return 2
    src, dst = argv[1], argv[2]
    if not os.path.isdir(src):
        print("error: %s is not a directory" % src, file=sys.stderr)
        return 2
    objs = find_objects(src)
    os.makedirs(dst, exist_ok=True)
    written = 0
    for var, stem in NOVELS.items():
        lines = novel_lines(objs.get(var))
        if not lines:
            print("warning: novel %s not found" % var, file=sys.stderr)
            continue
        text = "\n".join(s.rstrip("\r") for s in lines).rstrip("\n") + "\n"
        out = os.path.join(dst, stem + ".txt")
        tmp = out + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, out)
        print("%s: %d lines, %d chars" % (out, len(lines), len(text)))
        written += 1
    if written == 0:
        print("error: no novel found under %s" % src, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
