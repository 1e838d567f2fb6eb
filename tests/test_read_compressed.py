"""``.xz`` / ``.lzma`` / ``.zst`` archives through the read stage on FnApiRunner (README: "Text
formats are decompressed by extension"), as tests/test_read_files.py does for gzip, bz2 and
deflate: every line read once, and a truncated ``.xz`` is a dead letter at stage ``read`` that
keeps what was readable and quotes no content."""
import json
import lzma

import zstandard

from archive_files import summary


def body(i):
    return json.dumps({"hr": 60 + i, "dev": f"d{i % 3}"})


def test_xz_lzma_and_zst_lines_are_read_and_a_truncated_xz_is_a_dead_letter(tmp_path):
    plain = [body(i) for i in range(200)]
    text = ("\n".join(plain) + "\n").encode()
    (tmp_path / "a.jsonl.xz").write_bytes(lzma.compress(b"\n".join(p.encode() for p in plain[:4])))
    (tmp_path / "b.jsonl.lzma").write_bytes(lzma.compress(b"\r\n".join(p.encode() for p in plain[4:7]) + b"\r\n",
                                                          format=lzma.FORMAT_ALONE))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    full = lzma.compress(text)
    (tmp_path / "truncated.jsonl.xz").write_bytes(full[: len(full) // 2])
    events, dead = summary(str(tmp_path / "*"), "body")
    by_file = {}
    for line, name in events:
        by_file.setdefault(name, []).append(line)
    assert sorted(by_file["a.jsonl.xz"]) == sorted(plain[:4])
    assert sorted(by_file["b.jsonl.lzma"]) == sorted(plain[4:7])
    assert sorted(by_file["c.jsonl.zst"]) == sorted(plain)
    assert 0 < len(by_file.get("truncated.jsonl.xz", [])) < len(plain)  # what was readable is kept
    assert [d[:3] for d in dead] == [("read", "EOFError", "truncated.jsonl.xz")]
    assert '"hr"' not in str(dead)
