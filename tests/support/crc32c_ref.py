"""CRC32C (Castagnoli, reflected polynomial 0x82F63B78) in pure Python, independent of ranktune's C++ code: the
reference the tests check checkpoint manifests against, and what they use to re-seal a manifest they edited."""
import json
import pathlib


def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        t.append(c)
    return t


_TABLE = _table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def manifest_text(body: dict) -> str:
    """The manifest's JSON text as ranktune writes it (2-space indent, UTF-8 as is); its self-checksum covers this
    text of the manifest without the manifest_crc32c key."""
    return json.dumps(body, indent=2, ensure_ascii=False)


def reseal_manifest(step_dir) -> None:
    """Recomputes every file's size and CRC32C and the manifest's self-checksum, after a test edited the files."""
    step_dir = pathlib.Path(step_dir)
    m = json.loads((step_dir / "manifest.json").read_text(encoding="utf-8"))
    m.pop("manifest_crc32c")
    for f in m["files"]:
        data = (step_dir / f["name"]).read_bytes()
        f["size"], f["crc32c"] = len(data), f"{crc32c(data):08x}"
    m["manifest_crc32c"] = f"{crc32c(manifest_text(m).encode()):08x}"
    (step_dir / "manifest.json").write_text(manifest_text(m), encoding="utf-8")
