#!/usr/bin/env python3
"""Writes the Unicode tables of the data layer:

src/data/unicode_tables.inc: the code point ranges of the general categories L (letters) and N (numbers) that the
  byte-level pre-tokenizer splits need (\\p{L}, \\p{N}), and the Unicode version they are of, kUnicodeVersion.
  HF `tokenizers` 0.23 runs its split regexes with Oniguruma, whose tables are Unicode 16.0: a character added in
  15.0 or 16.0 is a letter or digit to HF, so these ranges come from Unicode 16.0.0 exactly, read from the
  `unicodedata2` package (pip install unicodedata2==16.0.0; Python's own unicodedata is 14.0.0 in Python 3.11).
  With the `tokenizers` package installed, the ranges are checked against what HF's own \\p{L} and \\p{N} match,
  code point for code point (they were equal for tokenizers 0.23.3). tests/data/test_hf_tokenizer.cpp checks the
  recorded version and characters of 15.0 and 16.0.
src/data/nfc_tables.inc: what Unicode normalization form C needs (UAX #15): canonical combining classes (ranges),
  one-level canonical decompositions, the primary composites as (first, second) -> composed pairs, and the ranges
  whose NFC quick check is not Yes. Hangul syllables are algorithmic and in no table.

NFC tables are restricted to the characters assigned in Unicode 9.0, because HF `tokenizers` (0.23) normalizes
with the Rust crate unicode-normalization-alignments 0.1.12, whose tables are Unicode 9.0: a character assigned
later is, for HF, a starter (class 0) that neither decomposes nor composes, and so it is here. Normalization
stability makes the 9.0 subset of Python's newer data equal to Unicode 9.0's own; they are read from Python's own
unicodedata. Python's unicodedata has no Age property, so it is read from Perl's core module Unicode::UCD (`perl`
must be on PATH).

Change the versions below when HF tokenizers moves to newer tables.
Usage: pip install unicodedata2==16.0.0 && python3 src/data/make_unicode_tables.py"""
import pathlib
import subprocess
import sys
import unicodedata

HF_REGEX_UNICODE_VERSION = "16.0.0"  # Oniguruma's \p{L}, \p{N} in HF tokenizers 0.23
HF_UNICODE_VERSION = "9.0"  # unicode-normalization-alignments 0.1.12 (HF tokenizers 0.23)
try:
    import unicodedata2
except ImportError:
    sys.exit(f"needs the unicodedata2 package: pip install unicodedata2=={HF_REGEX_UNICODE_VERSION}")

HANGUL_S = range(0xAC00, 0xAC00 + 11172)
HANGUL_V = range(0x1161, 0x1161 + 21)
HANGUL_T = range(0x11A8, 0x11A7 + 28)


def ranges(pred):
    out, start = [], None
    for cp in range(sys.maxunicode + 2):
        inside = cp <= sys.maxunicode and pred(cp)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            out.append((start, cp - 1))
            start = None
    return out


def table(name, rs):
    rows = ",\n".join(f"    {{0x{a:X}, 0x{b:X}}}" for a, b in rs)
    return f"constexpr CodeRange {name}[] = {{\n{rows},\n}};\n"


def packed_table(type_name, name, rows, per_line, comment):
    """Rows of tuples (ints in hex, strings as they are), several to a line: the NFC tables have thousands of rows."""
    cells = ["{" + ", ".join(f"0x{v:X}" if isinstance(v, int) else v for v in row) + "}" for row in rows]
    lines = [", ".join(cells[i:i + per_line]) for i in range(0, len(cells), per_line)]
    body = ",\n".join("    " + line for line in lines)
    return f"// {comment}\nconstexpr {type_name} {name}[] = {{\n{body},\n}};\n"


def assigned_in(version):
    """Predicate: was the code point assigned in Unicode `version` (Perl's Age property, 'In=' = age <= version)."""
    script = f'print join(" ", prop_invlist("In={version}"))'
    out = subprocess.run(["perl", "-MUnicode::UCD=prop_invlist", "-e", script],
                         check=True, capture_output=True, text=True).stdout.split()
    bounds = [int(x) for x in out]  # an inversion list: starts of alternating in/out runs
    inside = set()
    for k in range(0, len(bounds), 2):
        inside.update(range(bounds[k], bounds[k + 1] if k + 1 < len(bounds) else sys.maxunicode + 1))
    return inside.__contains__


def canonical_decomposition(cp):
    d = unicodedata.decomposition(chr(cp))
    if not d or d.startswith("<"):
        return None
    return [int(x, 16) for x in d.split()]


def nfc_tables(assigned):
    ccc = {cp: unicodedata.combining(chr(cp)) for cp in range(sys.maxunicode + 1) if assigned(cp)}
    classes = []
    for cp in sorted(c for c, v in ccc.items() if v):
        if classes and classes[-1][1] == cp - 1 and classes[-1][2] == str(ccc[cp]):
            classes[-1][1] = cp
        else:
            classes.append([cp, cp, str(ccc[cp])])
    decomp, comp, no = [], [], set()
    for cp in ccc:
        d = canonical_decomposition(cp)
        if d is None:
            continue
        assert len(d) in (1, 2) and all(assigned(x) for x in d), hex(cp)
        decomp.append((cp, d[0], d[1] if len(d) == 2 else 0))
        # A full composition exclusion (singleton, non-starter decomposition or CompositionExclusions.txt) is
        # exactly a canonically decomposable character that NFC does not give back.
        if unicodedata.normalize("NFC", chr(cp)) != chr(cp):
            no.add(cp)
        else:
            assert len(d) == 2, hex(cp)
            comp.append((d[0], d[1], cp))
    decomp.sort()
    comp.sort()
    maybe = {second for _, second, _ in comp} | set(HANGUL_V) | set(HANGUL_T)
    not_yes = ranges(lambda cp: cp in no or cp in maybe)
    for cp in ccc:  # what the quick check calls Yes must be NFC on its own and after any starter
        if cp not in no and cp not in maybe and not 0xD800 <= cp <= 0xDFFF:
            assert unicodedata.is_normalized("NFC", "a" + chr(cp)), hex(cp)
    return classes, decomp, comp, not_yes


def hf_regex_set(prop):
    """The code points HF tokenizers' regex engine matches with `prop` (None without the tokenizers package)."""
    try:
        from tokenizers import Regex, pre_tokenizers
    except ImportError:
        return None
    cps = [cp for cp in range(1, sys.maxunicode + 1) if not 0xD800 <= cp <= 0xDFFF]
    rest = pre_tokenizers.Split(Regex(prop), behavior="removed").pre_tokenize_str("".join(map(chr, cps)))
    return set(cps) - {ord(c) for piece, _ in rest for c in piece}


def check_against_hf(category, rs):
    """The ranges must be what HF's \\p{L} / \\p{N} match, code point for code point."""
    hf = hf_regex_set(f"\\p{{{category}}}")
    if hf is None:
        print(f"not checked against HF's \\p{{{category}}}: pip install tokenizers")
        return
    ours = {cp for a, b in rs for cp in range(a, b + 1)}
    if ours != hf:
        sys.exit(f"\\p{{{category}}} differs from HF tokenizers' at {len(ours ^ hf)} code points, e.g. "
                 f"{[hex(cp) for cp in sorted(ours ^ hf)[:8]]}: is HF_REGEX_UNICODE_VERSION still HF's?")
    print(f"\\p{{{category}}}: {len(ours)} code points, equal to HF tokenizers'")


def main():
    here = pathlib.Path(__file__)
    if unicodedata2.unidata_version != HF_REGEX_UNICODE_VERSION:
        sys.exit(f"unicodedata2 is Unicode {unicodedata2.unidata_version}, HF's regexes use "
                 f"{HF_REGEX_UNICODE_VERSION}: pip install unicodedata2=={HF_REGEX_UNICODE_VERSION}")
    letters = ranges(lambda cp: unicodedata2.category(chr(cp)).startswith("L"))
    numbers = ranges(lambda cp: unicodedata2.category(chr(cp)).startswith("N"))
    check_against_hf("L", letters)
    check_against_hf("N", numbers)
    text = (f"// Generated by src/data/make_unicode_tables.py from Unicode {HF_REGEX_UNICODE_VERSION} (unicodedata2); "
            "do not edit.\n"
            f"constexpr char kUnicodeVersion[] = \"{HF_REGEX_UNICODE_VERSION}\";\n"
            + table("kLetterRanges", letters) + table("kNumberRanges", numbers))
    here.with_name("unicode_tables.inc").write_text(text)

    version = unicodedata.unidata_version

    classes, decomp, comp, not_yes = nfc_tables(assigned_in(HF_UNICODE_VERSION))
    text = (f"// Generated by src/data/make_unicode_tables.py from Unicode {version}, restricted to the characters\n"
            f"// assigned in Unicode {HF_UNICODE_VERSION} (the tables HF tokenizers normalizes with); do not edit.\n"
            + packed_table("CombiningClassRange", "kCombiningClasses", classes, 4,
                           "{first, last, canonical combining class}; absent: class 0")
            + packed_table("Decomposition", "kDecompositions", decomp, 4,
                           "{code point, first, second}: one level of canonical decomposition (second 0: a singleton)")
            + packed_table("Composition", "kCompositions", comp, 4,
                           "{first, second, composed}, sorted by (first, second): the primary composites")
            + packed_table("CodeRange", "kNfcQuickCheckNotYes", not_yes, 6,
                           "NFC_Quick_Check No (composition exclusions) or Maybe (second of a composition)"))
    here.with_name("nfc_tables.inc").write_text(text)


if __name__ == "__main__":
    main()
