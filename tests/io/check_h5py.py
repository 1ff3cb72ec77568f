#!/usr/bin/env python3
"""Reads the 2-rank fixture checkpoints with h5py, numpy, torch and h5dump only (no ranktune code):

- manifest.json: its self-checksum, and every file's size and CRC32C (computed here, in pure Python);
- every dataset reads in h5py, with `dtype`/`shape` attributes that agree with it, root attributes as str/int;
- bfloat16 datasets read as float32 with exact values: all 65536 bit patterns, and the fixture recipe
  (tests/io/fixture_state.h) rebuilt with torch for every dtype;
- h5dump reads every file completely (exit 0).
"""
import json
import pathlib
import shutil
import subprocess
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "support"))
from crc32c_ref import crc32c, manifest_text  # noqa: E402


TORCH_NAMES = {  # at::toString names used in the fixture -> torch dtype
    "Float": torch.float32, "Double": torch.float64, "Half": torch.float16, "BFloat16": torch.bfloat16,
    "Char": torch.int8, "Short": torch.int16, "Int": torch.int32, "Long": torch.int64, "Byte": torch.uint8,
    "Bool": torch.bool,
}
STORED = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "<f4", "int8": "|i1", "int16": "<i2",
          "int32": "<i4", "int64": "<i8", "uint8": "|u1", "bool": "|u1", "bytes": "|u1"}

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def fixture_tensor(dt):
    base = torch.arange(105, dtype=torch.float64)
    if dt == torch.bool:
        t = torch.fmod(base, 3) == 0
    elif dt.is_floating_point:
        t = (base * 0.37 - 19).to(dt)
    elif dt == torch.uint8:
        t = torch.fmod(base * 7, 251).to(dt)
    else:
        t = (torch.fmod(base * 7, 251) - 125).to(dt)
    return t.reshape(3, 5, 7)


def as_numpy(t):
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    if t.dtype == torch.bool:
        return t.to(torch.uint8).numpy()
    return t.numpy()


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        nan = np.isnan(a)
        if not np.array_equal(nan, np.isnan(b)):
            return False
        return np.array_equal(a[~nan].view(f"u{a.itemsize}"), b[~nan].view(f"u{b.itemsize}"))
    return np.array_equal(a, b)


def check_manifest(step_dir):
    text = (step_dir / "manifest.json").read_text(encoding="utf-8")
    m = json.loads(text)
    body = dict(m)
    stored = body.pop("manifest_crc32c")
    again = manifest_text(body)
    check(f"{crc32c(again.encode()):08x}" == stored, f"{step_dir}: manifest self-checksum")
    check(m["format"] == "ranktune-checkpoint" and m["format_version"] == 1, f"{step_dir}: manifest format")
    check(m["step"] == 7 and m["world_size"] == 2, f"{step_dir}: step/world size")
    for f in m["files"]:
        data = (step_dir / f["name"]).read_bytes()
        check(len(data) == f["size"], f"{f['name']}: size")
        check(f"{crc32c(data):08x}" == f["crc32c"], f"{f['name']}: crc32c")
    return m


def check_file(path, rank):
    seen = {}
    with h5py.File(path, "r") as f:
        a = f.attrs
        check(isinstance(a["format"], str) and a["format"] == "ranktune-checkpoint", f"{path}: format attr is str")
        check(int(a["format_version"]) == 1 and int(a["step"]) == 7, f"{path}: version/step attrs")
        check(int(a["rank"]) == rank and int(a["world_size"]) == 2, f"{path}: rank/world attrs")
        check(isinstance(a["mode"], str) and a["mode"] == "ddp", f"{path}: mode attr is str 'ddp'")
        check(isinstance(a["topology"], str) and a["topology"] == "fixture", f"{path}: topology attr is str")
        check(int(a["data.cursor"]) == 1000 + rank, f"{path}: cursor")
        if rank == 0:
            check(isinstance(a["config"], str) and a["config"] == "[train]\nlr = 0.001\nnote = Grüße ☃\n",
                  f"{path}: UTF-8 config attr is str")
            check(int(a["tokens_seen"]) == 123456789012, f"{path}: int64 attr")

        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset):
                return
            dtype = obj.attrs["dtype"]
            shape = tuple(int(x) for x in obj.attrs["shape"])
            check(isinstance(dtype, str), f"{name}: dtype attr is str")
            check(obj.shape == shape, f"{name}: shape attr {shape} vs dataset {obj.shape}")
            check(obj.dtype == np.dtype(STORED[dtype]), f"{name}: h5py dtype {obj.dtype} for {dtype}")
            seen[name] = (dtype, obj[()])
        f.visititems(visit)
    check("rng/cpu" in seen and seen["rng/cpu"][0] == "bytes", f"{path}: rng blob")
    if rank != 0:
        return
    for tname, dt in TORCH_NAMES.items():
        key = f"dtypes/{tname}"
        check(key in seen and same_bits(seen[key][1], as_numpy(fixture_tensor(dt))), f"{path}: {key} values")
    bits = (np.arange(65536, dtype=np.uint32) << 16).view(np.float32).reshape(256, 256)
    got = seen["special/bf16_all_bits"][1]
    check(got.dtype == np.float32 and same_bits(got, bits), f"{path}: all bf16 bit patterns as exact float32")
    w = (torch.arange(64 * 48, dtype=torch.float64).reshape(64, 48) / 97).sin().to(torch.bfloat16)
    check(same_bits(seen["model/layers/0/attn/wq/weight"][1], w.float().numpy()), f"{path}: bf16 weight")
    check(seen["scalar"][1] == np.float32(2.5), f"{path}: 0-d tensor")


def main():
    root = pathlib.Path(sys.argv[1])
    for kind in ("replicated", "per_rank"):
        step_dir = root / kind / "step_00000007"
        check((root / kind / "latest").read_text() == "step_00000007\n", f"{kind}: latest")
        m = check_manifest(step_dir)
        for f in m["files"]:
            path = step_dir / f["name"]
            check_file(path, f["rank"])
            # hdf5-tools is installed by scripts/setup.sh; a machine without it (the GPU image) checks h5py alone.
            for args in (["-H"], []) if shutil.which("h5dump") else ():
                r = subprocess.run(["h5dump", *args, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                check(r.returncode == 0, f"h5dump {' '.join(args)} {path}: exit {r.returncode} {r.stderr[:300]!r}")
    if not shutil.which("h5dump"):
        print("check_h5py: h5dump not installed here: h5dump part skipped")
    print(f"check_h5py: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
