#!/usr/bin/env python3
"""The closing sample of a `ranktune train` log (`sample: prompt="..." | continuation="..."`, escaped as
utf8_escape writes it), unescaped to the bytes the tokenizer decoded.

  sample_of.py LOG [prompt|continuation|both]   writes those bytes to stdout (both: prompt then continuation)
"""
import re
import sys

QUOTED = rb'"((?:[^"\\]|\\(?:x[0-9a-f]{2}|[nrt"\\]))*)"'
ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b'"': b'"', b"\\": b"\\"}


def unescape(s):
    return re.sub(rb'\\(x[0-9a-f]{2}|[nrt"\\])',
                  lambda m: ESCAPES.get(m.group(1)) or bytes([int(m.group(1)[1:], 16)]), s)


def main(log, part="both"):
    m = re.search(rb"^sample: prompt=" + QUOTED + rb" \| continuation=" + QUOTED + rb"$", open(log, "rb").read(), re.M)
    if not m:
        sys.exit("no sample line in " + log)
    prompt, continuation = unescape(m.group(1)), unescape(m.group(2))
    sys.stdout.buffer.write({"prompt": prompt, "continuation": continuation, "both": prompt + continuation}[part])


if __name__ == "__main__":
    main(*sys.argv[1:])
