"""Reads a prepared token dataset (one .h5 or a shard directory) with h5py and checks its documented layout:
the checksum header in each file's 512-byte user block (checked here with a CRC32C written from RFC 3720, not
ranktune's), root attributes, int32 [rows, T] tokens/targets/positions, chunked with Fletcher32, targets pre-shifted
with -100 for no loss, positions restarting at every document, attribute counts equal to what the arrays hold, and
prompt tokens masked out of the loss (--instruction: the chat and prompt/response records of prepare.sh's corpus).
Usage: check_prepared.py PATH [--skipped N] [--same-as OTHER] [--shards N] [--instruction]"""
import argparse
import glob
import os
import struct
import sys

import h5py
import numpy as np

IGNORE = -100
USER_BLOCK = 512


def crc32c(data):
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit into a table."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def check_header(name):
    """docs/data.md: magic, header version 1, user block 512, file size, CRC32C of the file with its CRC zeroed."""
    data = bytearray(open(name, "rb").read())
    magic, version, block, size, crc = struct.unpack_from("<16sIIQI", data, 0)
    assert magic == b"ranktune-tokens\n", (name, magic)
    assert version == 1 and block == USER_BLOCK, (name, version, block)
    assert size == len(data), (name, size, len(data))
    data[32:36] = bytes(4)
    assert crc32c(data) == crc, (name, "the header's CRC32C does not match the file")
    assert not any(data[36:USER_BLOCK]), (name, "the rest of the user block is not zero")


def load(path):
    files = sorted(glob.glob(os.path.join(path, "shard-*.h5"))) if os.path.isdir(path) else [path]
    assert files, f"no shard files in {path}"
    attrs, parts = None, {"tokens": [], "targets": [], "positions": []}
    for i, name in enumerate(files):
        check_header(name)
        with h5py.File(name, "r") as f:
            assert f.userblock_size == USER_BLOCK, (name, f.userblock_size)
            a = dict(f.attrs)
            assert a["format"] == "ranktune-tokens" and a["format_version"] == 1, (name, a.get("format"))
            assert a["shard_index"] == i and a["shard_count"] == len(files), (name, a["shard_index"], a["shard_count"])
            attrs = attrs or a
            for key in parts:
                ds = f[key]
                assert ds.dtype == np.int32, (name, key, ds.dtype)
                assert ds.shape == (a["shard_rows"], a["seq_len"]), (name, key, ds.shape)
                assert ds.chunks is not None and ds.fletcher32, (name, key, "not chunked with Fletcher32")
                assert ds.attrs["dtype"] == "int32" and list(ds.attrs["shape"]) == list(ds.shape), (name, key)
                parts[key].append(ds[...])
    return attrs, {k: np.concatenate(v) for k, v in parts.items()}, len(files)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--skipped", type=int, default=0)
    ap.add_argument("--same-as")
    ap.add_argument("--shards", type=int)
    ap.add_argument("--instruction", action="store_true")
    args = ap.parse_args()
    attrs, d, nfiles = load(args.path)
    tok, tgt, pos = d["tokens"], d["targets"], d["positions"]
    rows, T = tok.shape
    for key in ("tokenizer", "tokenizer_fingerprint", "packing", "overlong", "chat_template", "document_boundaries",
                "sources"):
        assert isinstance(attrs[key], str), (key, type(attrs[key]))
    assert attrs["rows"] == rows and attrs["seq_len"] == T, (attrs["rows"], rows, attrs["seq_len"], T)
    assert attrs["document_boundaries"] == "position_reset"
    assert attrs["skipped_records"] == args.skipped, (attrs["skipped_records"], args.skipped)
    if args.shards is not None:
        assert nfiles == args.shards, (nfiles, args.shards)
    # Counts: loss tokens, and every slot is a document token or padding.
    assert attrs["loss_tokens"] == int((tgt != IGNORE).sum()), (attrs["loss_tokens"], int((tgt != IGNORE).sum()))
    assert attrs["tokens"] + attrs["pad_tokens"] == rows * T
    assert tok.min() >= 0 and tok.max() < attrs["vocab_size"]
    # Positions: 0 at a document start, else one more than the previous slot.
    assert (pos[:, 0] == 0).all()
    step = pos[:, 1:] - pos[:, :-1]
    assert ((pos[:, 1:] == 0) | (step == 1)).all(), "positions must count up and reset to 0 at a document start"
    # Pre-shifted targets: a trained target at t is the next token of the same document.
    same_doc = pos[:, 1:] == pos[:, :-1] + 1
    trained = tgt[:, :-1] != IGNORE
    assert (tgt[:, :-1][trained] == tok[:, 1:][trained]).all(), "a target differs from the next token"
    assert not (trained & ~same_doc).any(), "a target crosses a document boundary"
    # Prompt masking (byte tokenizer): the chat and prompt/response records of the test corpus.
    if args.instruction:
        assert attrs["tokenizer"] == "byte", "--instruction needs a dataset made with the byte tokenizer"
        text = bytes(int(t) if t < 256 else 0 for t in tok.reshape(-1))
        checked = 0
        for prompt, reply in ((b"User: Where does Ada live?\nAssistant: ", b"Ada lives in Oslo."),
                              (b"Q: What colour is the sky?\nA: ", b"Blue.")):
            at = text.find(prompt + reply)
            if at < 0:
                continue
            flat = tgt.reshape(-1)
            start = at
            while pos.reshape(-1)[start] != 0:
                start -= 1
            reply_at = at + len(prompt)
            assert (flat[start:reply_at - 1] == IGNORE).all(), f"prompt tokens of {prompt!r} are not masked"
            assert flat[reply_at - 1] == reply[0], "the last prompt token must predict the reply's first"
            assert (flat[reply_at:reply_at + len(reply) - 1] != IGNORE).all(), "reply tokens must be trained"
            checked += 1
        assert checked == 2, f"found {checked} of the 2 instruction records"
    if args.same_as:
        _, other, _ = load(args.same_as)
        for key in d:
            assert np.array_equal(d[key], other[key]), f"{key} differs from {args.same_as}"
    print(f"ok: {args.path}: {rows} rows of {T} in {nfiles} file(s), {attrs['loss_tokens']} loss tokens")


if __name__ == "__main__":
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720's check value
    try:
        main()
    except AssertionError as e:
        print(f"FAIL: {e}")
        sys.exit(1)
