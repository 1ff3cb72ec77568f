"""Tokenization speed of `ranktune prepare` against HF `tokenizers` on the same text and vocabulary (issue #15 point 8).
Run by bench/prepare_speed.sh; works offline.

  make DIR          a Llama-3-style byte-level BPE (the Llama-3 Split regex, ignore_merges, 128k merged tokens + 256
                    specials = 128256) trained with `tokenizers` on local text: the Python standard library's .py files
                    (half of them), this repository's docs, and generated text in eight scripts; then DIR/bench.jsonl,
                    about BENCH_MB (10) MB of {"text": ...} records from the other half of the files and other
                    generated text, written BENCH_COPIES (1) times over, each copy in its own order (the standard
                    library holds about 8 MB of text to take: copies make a file large enough to time the threads
                    apart from the start-up). Both are kept: a second `make` reuses them.
  hf DIR            encodes DIR/bench.jsonl with HF `tokenizers` (encode_batch; thread count from RAYON_NUM_THREADS and
                    TOKENIZERS_PARALLELISM, set by the caller before Python starts), prints JSON timings, writes the
                    ids of each record as ranktune's documents hold them (bos ... eos) to DIR/hf_ids.npy/hf_offsets.npy.
  check DIR OUT.h5  the documents of a prepared dataset (split at position resets, padding dropped) equal HF's ids.
  run DIR BIN       REPEATS rounds (BENCH_REPEATS, 3), each: `BIN prepare` of one record (the start-up cost: process,
                    LibTorch, tokenizer.json), `BIN prepare` at every thread count of BENCH_THREADS ("1 <cpus>"),
                    then `mpirun -np N BIN prepare` for each N of BENCH_RANKS (default: 2 and 4 where that many
                    CPUs exist and mpirun is found; "" for none; BENCH_MPIRUN, BENCH_MPIRUN_FLAGS) with the CPUs
                    divided among the ranks, then HF single-threaded, then HF at the largest thread count; the ids
                    of every prepare checked against HF's, and each mpirun output against the 1-process one byte for
                    byte; prints the medians as a markdown table (and DIR/results.json).
"""
import glob
import json
import statistics
import subprocess
import os
import random
import shutil
import sys
import sysconfig
import time

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def syllables(rng, script):
    """A few hundred syllables of a script, so generated words have the letter statistics of a language."""
    def rng_chars(lo, hi, n):
        return [chr(rng.randrange(lo, hi + 1)) for _ in range(n)]
    if script == "cyrillic":
        c, v = list("бвгдзклмнпрстфхцчшщжй"), list("аеиоуыэюяё")
        return [a + b for a in c for b in v] + [a + b + d for a in c[:8] for b in v for d in c[8:14]]
    if script == "greek":
        c, v = list("βγδζθκλμνξπρστφχψ"), list("αεηιουωάέήίόύώ")
        return [a + b for a in c for b in v]
    if script == "latin-diacritics":  # French / German / Spanish flavours
        c, v = list("bcdfghjklmnpqrstvwxzß"), list("aeiouäöüéèêàçñíó")
        return [a + b for a in c for b in v] + [a + b + d for a in c[:6] for b in v for d in "nrsl"]
    if script == "arabic":
        c = [chr(x) for x in range(0x0628, 0x063B)] + [chr(x) for x in range(0x0641, 0x064B)]
        v = ["", "\u0627", "\u0648", "\u064A"]
        return [a + b for a in c for b in v]
    if script == "devanagari":  # consonant + vowel sign (Mn/Mc marks: not \p{L})
        c = [chr(x) for x in range(0x0915, 0x0939)]
        v = ["", "\u093E", "\u093F", "\u0940", "\u0941", "\u0947", "\u094B", "\u0902"]
        return [a + b for a in c for b in v]
    if script == "han":
        return rng_chars(0x4E00, 0x4E00 + 3500, 3000)
    if script == "japanese":
        return [chr(x) for x in range(0x3041, 0x3094)] + [chr(x) for x in range(0x30A1, 0x30F4)] + \
            rng_chars(0x4E00, 0x4E00 + 2000, 800)
    if script == "hangul":
        return rng_chars(0xAC00, 0xAC00 + 2400, 1500)
    raise ValueError(script)


SCRIPTS = {  # script: (words joined by spaces, sentence end)
    "cyrillic": (True, ". "), "greek": (True, ". "), "latin-diacritics": (True, ". "), "arabic": (True, ". "),
    "devanagari": (True, "। "), "han": (False, "。"), "japanese": (False, "。"), "hangul": (True, ". "),
}


def generated_text(seed, nbytes):
    """Paragraphs of Zipf-distributed made-up words in eight scripts, with numbers, punctuation and the odd emoji."""
    rng = random.Random(seed)
    langs = {}
    for script in SCRIPTS:
        syl = syllables(random.Random(script), script)  # one lexicon per script, the same for every seed
        lex_rng = random.Random(script + "-lexicon")
        lexicon = ["".join(lex_rng.choice(syl) for _ in range(lex_rng.choice((1, 1, 2, 2, 2, 3, 3, 4))))
                   for _ in range(6000)]
        weights = [1.0 / (k + 1) for k in range(len(lexicon))]
        langs[script] = (lexicon, weights)
    out, size = [], 0
    while size < nbytes:
        script = rng.choice(list(SCRIPTS))
        spaced, end = SCRIPTS[script]
        lexicon, weights = langs[script]
        para = []
        for _ in range(rng.randint(2, 8)):
            words = rng.choices(lexicon, weights, k=rng.randint(4, 18))
            if rng.random() < 0.3:
                words.insert(rng.randrange(len(words)), str(rng.choice((rng.randint(1, 99), rng.randint(1000, 2030),
                                                                         rng.randint(10000, 9999999)))))
            if rng.random() < 0.05:
                words.append(rng.choice("😀🎉🚀✨👍"))
            sep = " " if spaced else ""
            s = sep.join(words)
            if rng.random() < 0.2:
                s = s.replace(sep, ", " if spaced else "，", 1) if sep else s[:2] + "，" + s[2:]
            para.append(s[:1].upper() + s[1:] + end.strip())
        text = (" " if spaced else "").join(para) + "\n\n"
        out.append(text)
        size += len(text.encode())
    return "".join(out)


def python_files():
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(f for f in glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)
                   if "site-packages" not in f and "dist-packages" not in f)
    texts = []
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                texts.append(fh.read())
        except (UnicodeDecodeError, OSError):
            pass
    return texts


def records_of(text, rng, max_bytes):
    """Cuts text into records of 200..max_bytes bytes at line ends."""
    lines, cur, out = text.splitlines(keepends=True), [], []
    target = rng.randint(200, max_bytes)
    size = 0
    for line in lines:
        n = len(line.encode())
        if n > max_bytes:
            continue
        if size + n > target and cur:
            out.append("".join(cur))
            cur, size, target = [], 0, rng.randint(200, max_bytes)
        cur.append(line)
        size += n
    if cur:
        out.append("".join(cur))
    return out


def make(work, mb, vocab_size, max_record_bytes, copies=1):
    os.makedirs(work, exist_ok=True)
    tok_path = os.path.join(work, "tokenizer.json")
    data_path = os.path.join(work, "bench.jsonl")
    py = python_files()
    if not os.path.exists(tok_path):
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
        docs = [open(f, encoding="utf-8").read() for f in sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]
        train = py[0::2] + docs + [generated_text(1, 12_000_000)]
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        t0 = time.time()
        tok.train_from_iterator(train, trainer)
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                    "<|eot_id|>"] + [f"<|reserved_special_token_{i}|>" for i in range(251)]
        tok.add_special_tokens(specials)
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                          special_tokens=[("<|begin_of_text|>", bos)])])
        tok.save(tok_path)
        print(f"trained {tok.get_vocab_size()} tokens in {time.time() - t0:.0f} s -> {tok_path}", flush=True)
    if not os.path.exists(data_path):
        rng = random.Random(7)
        target = int(mb * 1e6)
        gen = records_of(generated_text(2, target // 4), rng, max_record_bytes)
        recs, size = list(gen), sum(len(r.encode()) for r in gen)
        for text in py[1::2]:
            for r in records_of(text, rng, max_record_bytes):
                if size >= target:
                    break
                recs.append(r)
                size += len(r.encode())
        with open(data_path, "w", encoding="utf-8") as f:
            for _ in range(copies):
                rng.shuffle(recs)
                for r in recs:
                    f.write(json.dumps({"text": r}, ensure_ascii=False) + "\n")
        print(f"wrote {copies} x {len(recs)} records, {copies * size / 1e6:.2f} MB of text -> {data_path}",
              flush=True)


def hf(work):
    import numpy as np
    t0 = time.perf_counter()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(work, "tokenizer.json"))
    texts = [json.loads(line)["text"] for line in open(os.path.join(work, "bench.jsonl"), encoding="utf-8")]
    t1 = time.perf_counter()
    encs = tok.encode_batch(texts, add_special_tokens=True)
    t2 = time.perf_counter()
    eos = tok.token_to_id("<|end_of_text|>")
    ids = [e.ids if e.ids and e.ids[-1] == eos else e.ids + [eos] for e in encs]
    np.save(os.path.join(work, "hf_ids.npy"), np.fromiter((i for d in ids for i in d), dtype=np.int32))
    np.save(os.path.join(work, "hf_offsets.npy"), np.cumsum([0] + [len(d) for d in ids]).astype(np.int64))
    print(json.dumps({"load_s": t1 - t0, "encode_s": t2 - t1, "tokens": int(sum(len(d) for d in ids)),
                      "text_bytes": sum(len(t.encode()) for t in texts)}))


def check(work, h5path):
    import h5py
    import numpy as np
    ids = np.load(os.path.join(work, "hf_ids.npy"))
    offs = np.load(os.path.join(work, "hf_offsets.npy"))
    with h5py.File(h5path, "r") as f:
        tokens, pos = f["tokens"][...], f["positions"][...]
    bos = int(ids[0])
    docs = []
    for row, p in zip(tokens, pos):
        starts = [0] + [t for t in range(1, len(p)) if p[t] != p[t - 1] + 1] + [len(p)]
        for a, b in zip(starts, starts[1:]):
            if row[a] == bos:  # padding starts with the pad (= eos) id, every document with bos
                docs.append(row[a:b])
    assert len(docs) == len(offs) - 1, f"{len(docs)} documents in {h5path}, {len(offs) - 1} records encoded by HF"
    for k, d in enumerate(docs):
        ref = ids[offs[k]:offs[k + 1]]
        if not np.array_equal(d, ref):
            bad = int(np.argmax(d[:min(len(d), len(ref))] != ref[:min(len(d), len(ref))]))
            sys.exit(f"record {k}: ranktune and HF differ at token {bad}: {d[bad:bad + 8]} vs {ref[bad:bad + 8]}")
    print(f"ids identical: {len(docs)} records, {len(ids)} tokens")


def run(work, binary):
    threads = [int(t) for t in os.environ.get("BENCH_THREADS", f"1 {os.cpu_count()}").split()]
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    seq = os.environ.get("BENCH_SEQ_LEN", "2048")
    has_threads = "prepare.threads" in subprocess.run([binary, "prepare", "--help"], capture_output=True,
                                                      text=True).stdout
    me = [sys.executable, os.path.abspath(__file__)]
    times = {}
    cpus = os.cpu_count() or 1
    mpirun = shutil.which(os.environ.get("BENCH_MPIRUN", "mpirun"))
    ranks = [int(n) for n in os.environ.get("BENCH_RANKS", " ".join(str(n) for n in (2, 4) if n <= cpus)).split()]
    if not mpirun or not has_threads:
        ranks = []

    def hf_run(n):
        env = dict(os.environ, RAYON_NUM_THREADS=str(n), TOKENIZERS_PARALLELISM="true" if n > 1 else "false")
        r = json.loads(subprocess.run(me + ["hf", work], env=env, check=True, capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1])
        times.setdefault(f"hf encode_batch, {n} thread(s)", []).append(r["encode_s"])
        times.setdefault(f"hf load + read + encode_batch, {n} thread(s)", []).append(r["load_s"] + r["encode_s"])
        return r

    one = os.path.join(work, "one.jsonl")
    with open(os.path.join(work, "bench.jsonl"), encoding="utf-8") as f, open(one, "w", encoding="utf-8") as g:
        g.write(f.readline())

    def prepare(data, out, n, np=1):
        # np > 1: under mpirun, n threads per rank.
        launch = []
        env = None
        if np > 1:
            launch = [mpirun, "-np", str(np)] + os.environ.get("BENCH_MPIRUN_FLAGS", "--bind-to none").split()
            env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        cmd = launch + [binary, "prepare", f"--data.path={data}", f"--data.tokenizer={work}/tokenizer.json",
               f"--train.seq_len={seq}", f"--model.max_seq_len={seq}", f"--prepare.output={out}"]
        if has_threads:
            cmd.append(f"--prepare.threads={n}")
        if os.path.exists(out):
            os.remove(out)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
        return dt

    for rep in range(repeats):
        # The fixed cost (process start, LibTorch loaded, tokenizer.json parsed, output file): a one-record prepare.
        times.setdefault("ranktune start-up (prepare of one record)", []).append(
            prepare(one, os.path.join(work, "one.h5"), 1))
        for n in threads:
            if n > 1 and not has_threads:
                continue
            times.setdefault(f"ranktune prepare, {n} thread(s)", []).append(
                prepare(os.path.join(work, "bench.jsonl"), os.path.join(work, f"out-{n}.h5"), n))
        for np in ranks:
            per = max(1, cpus // np)
            out = os.path.join(work, f"out-np{np}.h5")
            times.setdefault(f"ranktune prepare, mpirun -np {np} x {per} thread(s)", []).append(
                prepare(os.path.join(work, "bench.jsonl"), out, per, np))
            ref = os.path.join(work, f"out-{max(threads)}.h5")
            if rep == 0 and os.path.exists(ref):
                with open(ref, "rb") as a, open(out, "rb") as b:
                    if a.read() != b.read():
                        sys.exit(f"{out} differs from the one-process {ref}")
                print(f"mpirun -np {np}: the file of one process, byte for byte")
        info = hf_run(1)
        if max(threads) > 1:
            hf_run(max(threads))
        for n in threads:
            if rep == 0 and os.path.exists(os.path.join(work, f"out-{n}.h5")):
                check(work, os.path.join(work, f"out-{n}.h5"))
    mb = info["text_bytes"] / 1e6
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"\n{mb:.2f} MB of text, {info['tokens']} tokens, {os.cpu_count()} CPUs, load average {' '.join(load)}; "
          f"median of {repeats}\n")
    print("| what | s | MB/s | runs (s) |\n|---|---|---|---|")
    start = statistics.median(times["ranktune start-up (prepare of one record)"])
    for k, v in times.items():
        m = statistics.median(v)
        rate = "" if k.startswith("ranktune start-up") else f"{mb / m:.2f}"
        if k.startswith("ranktune prepare"):
            rate += f" ({mb / max(m - start, 1e-9):.1f} without start-up)"
        print(f"| {k} | {m:.2f} | {rate} | {' '.join(f'{x:.2f}' for x in v)} |")
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump({"mb": mb, "tokens": info["tokens"], "load": load, "times": times}, f, indent=1)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "make":
        make(sys.argv[2], float(os.environ.get("BENCH_MB", "10")), int(os.environ.get("BENCH_VOCAB", "128000")),
             int(os.environ.get("BENCH_RECORD_BYTES", "2000")), int(os.environ.get("BENCH_COPIES", "1")))
    elif cmd == "hf":
        hf(sys.argv[2])
    elif cmd == "run":
        run(sys.argv[2], sys.argv[3])
    elif cmd == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
