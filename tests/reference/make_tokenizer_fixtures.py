#!/usr/bin/env python3
"""Trains small BPE tokenizers with HF `tokenizers` itself and records HF's ids for a test corpus, so the C++
tokenizer is checked against the reference implementation (tests/data/test_hf_tokenizer.cpp).

Everything is generated here from a seed: a multilingual / code / numbers / whitespace / emoji corpus for training,
and a test corpus of different lines. Nothing is downloaded. Writes tests/reference/fixtures/tokenizers/:
  <name>.tokenizer.json   a tokenizer of one family (trained on the training corpus)
  <name>.cases.jsonl      per test line: text, HF ids with and without special tokens, HF decode with and without
                          skip_special_tokens (qwen2_nfc: also lines that NFC changes, see NFC_LINES)
  <name>.chat.jsonl       chat conversations rendered in the family's template, HF's ids for the rendered text and
                          the text each trained (assistant) span must decode to
  added_strip.*           lstrip/rstrip added tokens next to other added tokens (ADDED_STRIP_LINES), with the lines
                          HF itself fails on marked "error"
Usage: pip install tokenizers==0.23.3 && python3 tests/reference/make_tokenizer_fixtures.py [NAME ...]
(only the named fixtures; the SentencePiece-style ones train differently from run to run, so rewrite only what changed)
"""
import json
import pathlib
import random
import sys
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

OUT = pathlib.Path(__file__).resolve().parent / "fixtures" / "tokenizers"

GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
            r"\s*[\r\n]+|\s+(?!\S)|\s+")

# Fragments the corpus lines are assembled from: scripts with and without spaces, combining marks, digits of
# several kinds, emoji sequences, code, and the whitespace the pre-split rules treat specially.
WORDS = {
    "en": "the quick brown fox jumps over lazy dog while seven wizards quietly hex a jovial sphinx".split(),
    "de": "Grüße aus Köln über die Straße fährt ein schöner Bäcker mit Äpfeln".split(),
    "fr": "où est la bibliothèque près du café élève naïve façade garçon cœur".split(),
    "es": "mañana el niño pidió piñata años después señal acción".split(),
    "ru": "Привет мир съешь же ещё этих мягких французских булок да выпей чаю".split(),
    "el": "Γειά σου κόσμε ξεσκεπάζω την ψυχοφθόρα βδελυγμία".split(),
    "zh": ["你好世界", "我们今天学习", "机器学习模型", "数据并行训练", "北京欢迎你"],
    "ja": ["こんにちは", "カタカナとひらがな", "東京都の天気", "日本語の文章です"],
    "ko": ["안녕하세요", "세계", "한국어 문장입니다", "기계 학습"],
    "ar": "مرحبا بالعالم هذه جملة عربية للاختبار".split(),
    "he": "שלום עולם זה משפט בעברית".split(),
    "hi": "नमस्ते दुनिया यह हिंदी वाक्य है".split(),
    "th": ["สวัสดีชาวโลก", "ภาษาไทย"],
}
EMOJI = ["😀", "🚀", "👍🏽", "👩‍💻", "🇩🇪", "❤️", "🤖", "🎉🎉", "☕", "🧪"]
NUMBERS = ["0", "7", "42", "123", "2024", "31415926535", "3.14159", "-17", "1,000,000", "1e-5", "٣٤٥", "１２３", "²",
           "½", "Ⅻ", "0x1F", "v2.11.0"]
CODE = [
    "def add(a, b):\n    return a + b",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}",
    "if x != None and y >= 3: print(f'{x}:{y}')",
    "#include <vector>\nstd::vector<int> v{1, 2, 3};",
    "SELECT name, COUNT(*) FROM users WHERE age > 30;",
    "let s = \"héllo\"; // comment",
    "{\"key\": [1, 2.5, null, true]}",
    "x = [i**2 for i in range(10)]  # squares",
]
CONTRACTIONS = ["don't", "DON'T", "we're", "THEY'VE", "I'm", "she'll", "he'd", "it's", "It'S", "it'ſ", "'twas",
                "rock 'n' roll"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\u00a0", "\u3000", "\u2003", " \t "]


def make_line(rng):
    parts = []
    for _ in range(rng.randint(2, 9)):
        kind = rng.random()
        if kind < 0.45:
            lang = rng.choice(sorted(WORDS))
            parts.append(" ".join(rng.sample(WORDS[lang], k=min(len(WORDS[lang]), rng.randint(1, 4)))))
        elif kind < 0.6:
            parts.append(rng.choice(NUMBERS))
        elif kind < 0.7:
            parts.append(rng.choice(EMOJI))
        elif kind < 0.8:
            parts.append(rng.choice(CODE))
        elif kind < 0.9:
            parts.append(rng.choice(CONTRACTIONS))
        else:
            parts.append(rng.choice(["!", "?", "...", "--", "(", ")", "\"", "'", ",", ";", "@user", "#tag", "$5"]))
    line = ""
    for p in parts:
        line += p + (rng.choice(SPACES) if rng.random() < 0.3 else " ")
    return line.rstrip(" ") if rng.random() < 0.7 else line


# Lines that probe one rule each (split boundaries, whitespace runs, digits, unknown characters).
EDGE_LINES = [
    "", " ", "  ", "\n", "a", " a", "a ", "a  b", "a   b", "a\tb", "a \t b", "a\n\nb", "a \n b", "a\r\nb", "\r\n\r\n",
    "   leading spaces", "trailing spaces   ", "1234567", " 1234567", "12 345 6789", "abc123def", "x²+y²", "٣٤٥٦٧",
    "１２３４", "½ cup", "don't DON'T Don'T", "it's it'S it'ſ", "'s", "''", "'ll've", "?!?! ...", " !!!", "hello\u00a0world",
    "tab\there", "\ttabbed start", "emoji 😀😀😀 end", "👩‍💻 codes", "🇩🇪🇫🇷", "नमस्ते", "ก", "ＡＢＣ full width",
    "MiXeD CaSe", "über-cool", "naïve café", "C++ and C#", "a.b.c", "e.g. i.e.", "path/to/file.txt", "~user/$HOME",
    "ÿ", "\u0085next line", "\u2028line sep", "zero\u200bwidth", "\u1f00\u1f01", "ꙮ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\x7f\x01control",
]


# Lines NFC changes (qwen2_nfc): decomposed accents, marks out of canonical order, Hangul jamo (L+V, L+V+T, LV+T),
# singletons (Angstrom, Ohm, Kelvin signs), composition exclusions (Devanagari qa, U+0F73, U+0344), blocked marks,
# two starters that compose (Bengali, Kannada vowel signs), plus the NFD of corpus lines and of Korean words.
NFC_LINES = [
    "cafe\u0301 nai\u0308ve", "e\u0301e\u0300e\u0302e\u0308", "Vie\u0323\u0302t Nam vs Vi\u1ec7t Nam",
    "a\u0301\u0323 a\u0323\u0301 q\u0307\u0323", "\u1e0b\u0323 \u1e0d\u0307", "\u03b1\u0313\u0301\u0345 \u1f84",
    "\u1100\u1161\u11a8 \u1100\u1161 \uac00\u11a8 \u1100\u1100\u1161", "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165",
    "\u212b \u2126 \u212a \u00c5", "\u0958 \u0915\u093c \u0959\u095a", "\u0f73 \u0344 \u0340\u0341",
    "a\u0305\u0301 a\u0334\u0301 e\u0301\u0301", "\u09c7\u09be \u0cc6\u0cd5 \u0cc6\u0cc2\u0cd5",
    "A\u030a\u0301 \u01fa", "\u0301 leading mark", "x\u0327\u0301\u0316\u0300 mixed classes",
    "cafe\u0301<tool>e\u0301", "cafe\u0301 caf\u00e9 cafe", "\u0915\u094d\u0937 \u0928\u092e\u0938\u094d\u0924\u0947",
]

# Letters and digits added in Unicode 15.0 and 16.0 (HF's regex engine, Oniguruma, has 16.0 tables): inside words,
# next to ASCII digits (\p{N}{1,3} groups), before contractions, after a space. Nag Mundari, Kawi, Kaktovik, CJK
# Ext. H, Cyrillic Ext. D (15.0); Garay, Kirat Rai, Todhri, Ol Onal, Sunuwar, Gurung Khema, Tulu-Tigalari, Myanmar
# Ext. C, outlined digits and new Latin/Cyrillic capitals (16.0).
UNICODE16_LINES = [
    "1\U0001E4F3's", "12\U0001E4F0\U0001E4F1\U0001E4F345 6", "\U0001E4D0\U0001E4D1's and \U0001E4D0'LL",
    "ab\U00011F04\U00011F05cd \U00011F50\U00011F51\U00011F52", "\U0001D2C0\U0001D2C1\U0001D2C2\U0001D2C3 kaktovik",
    "\U00031350\U00031351 ext-h", "x\U0001E030\U0001E031y", "\U00010D4A\U00010D4B \U00010D40\U00010D41\U00010D427",
    "\U00016D43\U00016D44's \U00016D70\U00016D71", " \U000105C0\U000105C1'll", "hello \U0001E5D0\U0001E5D1 world",
    "\U0001E5F1\U0001E5F2\U0001E5F3\U0001E5F4\U0001E5F5", "(\U00011BC0\U00011BC1) \U00011BF0\U00011BF1.",
    "\U00016100\U00016130\U00016131", "\U00011380\U00011381 \U000116D0\U000116D1\U000116D2\U000116D3",
    "x\U0001CCF0\U0001CCF1\U0001CCF2\U0001CCF3y", "\uA7CB\uA7CC\uA7DA word \u1C89\u1C8A", "a \U00010EC2\U00010EC3 b",
]

# Added tokens that strip whitespace next to other added tokens: HF matches every added token of one pass (the
# non-normalized ones on the raw text, then the normalized ones) before stripping, so a token can be found inside
# whitespace that an rstrip token's strip also covers (both are kept), and a few such lines make HF itself fail.
ADDED_STRIP_TOKENS = [AddedToken("<m>", rstrip=True, special=True), AddedToken("<l>", lstrip=True, special=True),
                      AddedToken("<b>", lstrip=True, rstrip=True, special=True), AddedToken(" y", normalized=False),
                      AddedToken("y ", normalized=False), AddedToken("\n", normalized=False),
                      AddedToken(" \n", normalized=False, lstrip=True), AddedToken(" z")]


def added_strip_lines():
    lines = ["<m>  y", "<m> y", "<m>y", "<m>   yy", "<m>  \n  x", "y  <l>", "y <l>", "a y  <m>  y b", "<m>  z",
             "<b>  y <b>", "x <m>\n<l> q", "<m>\t\u3000 y", "<m>  \n", "q  \n<l>", "<b> \n <b>"]
    rng = random.Random(11)
    parts = ["<m>", "<l>", "<b>", " ", "  ", "\t", "\n", "y", "z", "x", "\u00a0"]
    lines += ["".join(rng.choice(parts) for _ in range(rng.randint(2, 9))) for _ in range(150)]
    return lines


def nfc_lines():
    nfd = [unicodedata.normalize("NFD", line) for line in corpus(5, 40)]
    korean = [unicodedata.normalize("NFD", " ".join(WORDS["ko"]))]
    return NFC_LINES + [line for line in nfd if unicodedata.normalize("NFC", line) != line] + korean


def corpus(seed, n):
    rng = random.Random(seed)
    return [make_line(rng) for _ in range(n)]


def byte_level(pre, specials, template=None, ignore_merges=False, normalizer=None, extra_added=()):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=900, min_frequency=2, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(1, 600), trainer=trainer)
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(s, tok.token_to_id(s)) for s in specials if s in template])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    for t in extra_added:  # one at a time: ids in the order given
        (tok.add_special_tokens if t.special else tok.add_tokens)([t])
    return tok


def sentencepiece_style(prepend_scheme, split, decoder, legacy_normalizer, extra_added=()):
    """Llama 2 / Mistral layout: <unk>, <s>, </s>, then <0x00>..<0xFF>, then the learned pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=2, special_tokens=["<unk>", "<s>", "</s>"],
                                  limit_alphabet=150, show_progress=False)
    tok.train_from_iterator(corpus(1, 600), trainer=trainer)

    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    learned = sorted((i, t) for t, i in vocab.items() if i >= 3)
    new_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        new_vocab[f"<0x{b:02X}>"] = 3 + b
    for _, t in learned:
        new_vocab.setdefault(t, len(new_vocab))
    j["model"]["vocab"] = new_vocab
    if legacy_normalizer:  # Llama 2: normalizer does the ▁ work, no pre-tokenizer
        j["pre_tokenizer"] = None
    else:  # Mistral v0.3: no normalizer, Metaspace pre-tokenizer
        j["normalizer"] = None
        j["pre_tokenizer"] = json.loads(pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme=prepend_scheme, split=split).__getstate__())
    tok = Tokenizer.from_str(json.dumps(j))
    tok.decoder = decoder
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_tokens(list(extra_added))
    return tok


def render_chat(family, messages):
    """The chat templates of the families (the layout docs/data.md documents), as text with special tokens."""
    out = ""
    if family == "llama3":
        out = "<|begin_of_text|>"
        for m in messages:
            out += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
    elif family == "chatml":
        for m in messages:
            out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    elif family in ("llama2", "mistral"):
        system = ""
        msgs = list(messages)
        if msgs and msgs[0]["role"] == "system":
            system = msgs.pop(0)["content"].strip()
        out = "" if family == "llama2" else "<s>"
        for i, m in enumerate(msgs):
            if m["role"] == "user":
                content = m["content"].strip()
                if i == 0 and system:
                    content = (f"<<SYS>>\n{system}\n<</SYS>>\n\n" + content) if family == "llama2" else \
                        f"{system}\n\n{content}"
                out += ("<s>" if family == "llama2" else "") + f"[INST] {content} [/INST]"
            else:
                out += f" {m['content'].strip()} </s>" if family == "llama2" else f" {m['content'].strip()}</s>"
    return out


def chat_cases(rng):
    lines = corpus(7, 40)
    cases = []
    for k in range(12):
        msgs = []
        if k % 3 == 0:
            msgs.append({"role": "system", "content": "You are terse. " + rng.choice(lines)})
        for _ in range(1 + k % 3):
            msgs.append({"role": "user", "content": rng.choice(lines) or "hi"})
            msgs.append({"role": "assistant", "content": rng.choice(lines) or "ok"})
        cases.append(msgs)
    return cases


def write_fixture(name, tok, specials, chat_family=None, extra_lines=()):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    special_lines = [f"{s}hello {s} world{s}" for s in specials] + [" ".join(specials), "".join(specials) + " x"]
    lines = EDGE_LINES + corpus(2, 150) + special_lines + list(extra_lines)
    with open(OUT / f"{name}.cases.jsonl", "w", encoding="utf-8") as f:
        for text in lines:
            try:
                ids = tok.encode(text).ids
            except BaseException as e:  # a Rust panic in HF is a BaseException
                f.write(json.dumps({"text": text, "error": str(e)}, ensure_ascii=False) + "\n")
                continue
            plain = tok.encode(text, add_special_tokens=False).ids
            f.write(json.dumps({"text": text, "ids": ids, "ids_plain": plain,
                                "decoded": tok.decode(ids, skip_special_tokens=True),
                                "decoded_keep": tok.decode(ids, skip_special_tokens=False)},
                               ensure_ascii=False) + "\n")
    if chat_family:
        with open(OUT / f"{name}.chat.jsonl", "w", encoding="utf-8") as f:
            for msgs in chat_cases(random.Random(3)):
                text = render_chat(chat_family, msgs)
                end = {"llama3": "<|eot_id|>", "chatml": "<|im_end|>", "llama2": " </s>", "mistral": "</s>"}[chat_family]
                replies = [(m["content"] if chat_family == "chatml" else m["content"].strip()) + end
                           for m in msgs if m["role"] == "assistant"]
                f.write(json.dumps({"family": chat_family, "messages": msgs, "rendered": text, "replies": replies,
                                    "ids": tok.encode(text, add_special_tokens=False).ids},
                                   ensure_ascii=False) + "\n")


def main(names):
    llama3_specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                       "<|eot_id|>"]
    qwen_specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    gpt2_pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    sp_decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    fixtures = {
        "gpt2": lambda: write_fixture("gpt2", byte_level(gpt2_pre, ["<|endoftext|>"]), ["<|endoftext|>"],
                                      extra_lines=UNICODE16_LINES),
        "gpt2_prefix_space": lambda: write_fixture("gpt2_prefix_space", byte_level(
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True), ["<|endoftext|>"]), ["<|endoftext|>"],
            extra_lines=UNICODE16_LINES),
        "llama3": lambda: write_fixture("llama3", byte_level(
            pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated"),
                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
            llama3_specials, template="<|begin_of_text|> $A", ignore_merges=True), llama3_specials, "llama3",
            extra_lines=UNICODE16_LINES),
        "qwen2": lambda: write_fixture("qwen2", byte_level(
            pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated"),
                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
            qwen_specials, extra_added=[AddedToken("<tool>", lstrip=True, rstrip=True, normalized=False)]),
            qwen_specials + ["<tool>"], "chatml", extra_lines=UNICODE16_LINES),
        "qwen2_nfc": lambda: write_fixture("qwen2_nfc", byte_level(
            pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated"),
                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
            qwen_specials, normalizer=normalizers.NFC(),
            extra_added=[AddedToken("<tool>", lstrip=True, rstrip=True, normalized=False),
                         AddedToken("caf\u00e9", normalized=True)]),
            qwen_specials + ["<tool>"], extra_lines=nfc_lines() + UNICODE16_LINES),
        "added_strip": lambda: write_fixture("added_strip", byte_level(
            gpt2_pre, ["<|endoftext|>"], extra_added=ADDED_STRIP_TOKENS), ["<|endoftext|>", "<m>", "<l>", "<b>"],
            extra_lines=added_strip_lines()),
        "llama2": lambda: write_fixture("llama2", sentencepiece_style(
            "always", False, sp_decoder, True, extra_added=[AddedToken("madeup", normalized=True)]),
            ["<s>", "</s>", "<unk>", "madeup"], "llama2"),
        "mistral": lambda: write_fixture("mistral", sentencepiece_style(
            "first", False, decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace("▁", "first", False)]),
            False), ["<s>", "</s>"], "mistral"),
        "metaspace_split": lambda: write_fixture("metaspace_split", sentencepiece_style(
            "always", True, sp_decoder, False), ["<s>", "</s>"]),
    }
    if set(names) - set(fixtures):
        sys.exit(f"unknown fixtures {sorted(set(names) - set(fixtures))}; known: {sorted(fixtures)}")
    for name, write in fixtures.items():
        if not names or name in names:
            write()


if __name__ == "__main__":
    main(sys.argv[1:])
