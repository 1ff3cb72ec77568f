#!/usr/bin/env python3
"""Records Python's unicodedata.normalize('NFC', text) for the C++ NFC (tests/data/test_nfc.cpp).

Writes tests/reference/fixtures/nfc.jsonl, one case a line: {"name", "text", "nfc", "source"}.
  crafted cases   one rule each: composition of decomposed Latin, reordering by combining class, Hangul L+V+T and
                  LV+T, singletons, composition exclusions, non-starter decompositions, blocked and unblocked marks
  exhaustive      every canonically decomposable character, as itself and as its NFD; every combining mark between
                  a base and marks of classes 230 and 220
  random          seeded random sequences of bases, jamo, marks of many classes, singletons and excluded characters
  after_9_0       characters assigned after Unicode 9.0: their expected value is HF `tokenizers`' NFC (Unicode 9.0
                  tables, see src/data/make_unicode_tables.py), which is not Python's; source says which
Every other case uses characters assigned in Unicode 9.0 only, where Python's newer data and HF's agree (checked
here against HF). Usage: pip install tokenizers==0.23.3 && python3 tests/reference/make_nfc_fixtures.py
"""
import json
import pathlib
import random
import sys
import unicodedata

from tokenizers import normalizers

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src" / "data"))
from make_unicode_tables import HF_UNICODE_VERSION, assigned_in  # noqa: E402

OUT = ROOT / "tests" / "reference" / "fixtures" / "nfc.jsonl"

CRAFTED = {
    "empty": "",
    "ascii": "plain ASCII, digits 0123 and punctuation!",
    "composed_latin": "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m",
    "decomposed_latin": "cafe\u0301 nai\u0308ve",
    "e_acute": "e\u0301",
    "reorder_acute_dot_below": "a\u0301\u0323",
    "reorder_no_composite": "q\u0307\u0323",
    "reorder_three_classes": "x\u0301\u0316\u0327\u0334",
    "precomposed_then_mark": "\u1e0b\u0323",
    "vietnamese": "Vie\u0323\u0302t",
    "greek_stack": "\u03b1\u0313\u0301\u0345",
    "chain_ring_acute": "A\u030a\u0301",
    "hangul_lv": "\u1100\u1161",
    "hangul_lvt": "\u1100\u1161\u11a8",
    "hangul_lv_t": "\uac00\u11a8",
    "hangul_lvt_t": "\uac01\u11a8",
    "hangul_l_l_v": "\u1100\u1100\u1161",
    "hangul_word": "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165",
    "hangul_syllable_decomposes_nothing": "\ud55c\uad6d\uc5b4",
    "singleton_angstrom": "\u212b",
    "singleton_ohm_kelvin": "\u2126\u212a",
    "singleton_tone_marks": "a\u0340\u0341",
    "exclusion_devanagari_qa": "\u0958",
    "exclusion_stays_decomposed": "\u0915\u093c",
    "exclusion_hebrew": "\ufb2a\u05e9\u05c1",
    "non_starter_decomposition": "\u0344 \u0f73",
    "blocked_same_class": "a\u0305\u0301",
    "unblocked_lower_class": "a\u0334\u0301",
    "blocked_by_starter": "a\u0062\u0301",
    "second_acute_after_composition": "e\u0301\u0301",
    "starter_pairs_bengali_kannada": "\u09c7\u09be \u0cc6\u0cd5 \u0cc6\u0cc2\u0cd5",
    "leading_mark": "\u0301a",
    "devanagari_virama": "\u0915\u094d\u0937 \u0928\u092e\u0938\u094d\u0924\u0947",
    "supplementary_composite": "\U00011099\U000110ba \U0001d15e",
    "emoji_and_cjk": "\U0001f600 \u4f60\u597d \u00e9\u0301",
}

AFTER_9_0 = {  # HF's answer, not Python's: these characters are unassigned in Unicode 9.0
    "malayalam_0d3b_is_a_starter": "e\u0d3b\u0301",
    "dives_akuru_11938_does_not_compose": "\U00011935\U00011930",
    "mark_1df6_is_a_starter": "a\u1df6\u0316",
}


def nfc(text):
    return unicodedata.normalize("NFC", text)


def main():
    assigned = assigned_in(HF_UNICODE_VERSION)
    hf = normalizers.NFC()
    old = [cp for cp in range(sys.maxunicode + 1) if assigned(cp) and not 0xD800 <= cp <= 0xDFFF]
    decomposable = [chr(cp) for cp in old
                    if unicodedata.decomposition(chr(cp)) and not unicodedata.decomposition(chr(cp)).startswith("<")]
    marks = [chr(cp) for cp in old if unicodedata.combining(chr(cp))]
    cases = [(name, text) for name, text in CRAFTED.items()]
    cases.append(("all_decomposables", " ".join(decomposable)))
    cases.append(("all_decomposables_nfd", " ".join(unicodedata.normalize("NFD", c) for c in decomposable)))
    cases.append(("all_marks_between_e_and_acute_dot_below", " ".join("e" + m + "\u0301\u0323" for m in marks)))

    rng = random.Random(15)
    pool = (list("aeoAEOuUnNcCsSzZ") + ["\u03b1", "\u03c9", "\u0415", "\u0438", "\u0915", "\u0928", "\u09c7",
                                        "\u09be", "\u0cc6", "\u0cd5", "\u0b47", "\u0b3e", "\u0b57"]
            + [chr(cp) for cp in range(0x1100, 0x1113)] + [chr(cp) for cp in range(0x1161, 0x1176)]
            + [chr(cp) for cp in range(0x11a7, 0x11c3)] + ["\uac00", "\uac1c", "\ud7a3"]
            + ["\u212b", "\u2126", "\u0958", "\u0344", "\u0f73", "\u0340", "\u1e0b", "\u00e9", "\u00c5", " "])
    pool_marks = ["\u0300", "\u0301", "\u0302", "\u0303", "\u0308", "\u030a", "\u030c", "\u0313", "\u0316",
                  "\u0323", "\u0327", "\u0328", "\u0334", "\u0345", "\u093c", "\u094d", "\u05b0", "\u05c1",
                  "\u0e38", "\u1dce", "\u302a", "\u0f71", "\u0f72", "\u0f74", "\u0f80"]
    for k in range(300):
        text = "".join(rng.choice(pool) if rng.random() < 0.45 else rng.choice(pool_marks)
                       for _ in range(rng.randint(1, 10)))
        cases.append((f"random_{k}", text))

    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for name, text in cases:
            assert all(assigned(ord(c)) for c in text), name
            expected = nfc(text)
            assert hf.normalize_str(text) == expected, f"HF and unicodedata disagree on {name}"
            f.write(json.dumps({"name": name, "text": text, "nfc": expected, "source": "unicodedata"},
                               ensure_ascii=False) + "\n")
        for name, text in AFTER_9_0.items():
            assert not all(assigned(ord(c)) for c in text) and hf.normalize_str(text) != nfc(text), name
            f.write(json.dumps({"name": name, "text": text, "nfc": hf.normalize_str(text), "source": "hf"},
                               ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
