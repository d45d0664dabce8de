"""Tensor-aware readahead (fs/read/tensor_ahead.c): an mmap reader that
touches a safetensors file's tensors in sorted-name order, as
safetensors.safe_open users do, gets the right bytes with each byte fetched
once and few requests, whatever the file order."""

import hashlib
import json
import mmap
import os
import struct
import time

import pytest

import wfs_testlib as lib

np = pytest.importorskip("numpy")

MiB = 1 << 20
LAYERS = 12


def write_safetensors(path, specs, seed):
    """Write @specs [(name, dtype, shape)] in that order, random bytes.
    @return {name: sha256 of its bytes}."""
    rng = np.random.default_rng(seed)
    header, off, blobs, sums = {}, 0, [], {}
    for name, dt, shape in specs:
        n = int(np.prod(shape)) * (2 if dt == "BF16" else 4)
        b = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        header[name] = {"dtype": dt, "shape": shape,
                        "data_offsets": [off, off + n]}
        blobs.append(b)
        sums[name] = hashlib.sha256(b).hexdigest()
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    return sums


def llama_like(path, seed=3):
    """A safetensors file in layer order (layers.0, 1, ..., 10, 11: not the
    sorted-name order, where 10 and 11 come before 2), big and small
    tensors mixed. @return {name: sha256 of its bytes}."""
    specs = [("model.embed_tokens.weight", "BF16", [1024, 2048])]
    for i in range(LAYERS):
        p = "model.layers.%d." % i
        specs += [(p + "input_layernorm.weight", "F32", [2048]),
                  (p + "self_attn.q_proj.weight", "BF16", [1024, 1024]),
                  (p + "self_attn.k_proj.weight", "BF16", [256, 1024]),
                  (p + "mlp.down_proj.weight", "BF16", [1024, 2048]),
                  (p + "post_attention_layernorm.weight", "F32", [2048])]
    specs.append(("lm_head.weight", "BF16", [1024, 2048]))
    return write_safetensors(path, specs, seed)


def name_order_mmap(path):
    """{name: sha256} read as safe_open does: the header with read(), then
    each tensor, in sorted-name order, copied out of an mmap."""
    out = {}
    with open(path, "rb") as f:
        header, start = lib.parse_safetensors_header(f)
        mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        try:
            for name in sorted(k for k in header if k != "__metadata__"):
                b, e = header[name]["data_offsets"]
                a = np.frombuffer(mm, np.uint8, e - b, start + b).copy()
                out[name] = hashlib.sha256(a.tobytes()).hexdigest()
                del a
        finally:
            mm.close()
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tensor-ahead")
    sums = llama_like(str(d / "model.safetensors"))
    # Names in reverse file order: a name-order reader goes backwards.
    specs = [("w.%03d" % (63 - i), "BF16", [1536, 1024]) for i in range(64)]
    rsums = write_safetensors(str(d / "reversed.safetensors"), specs, 4)
    return str(d), sums, rsums


def test_name_order_mmap_reads_right_bytes_once(nginx, mount, model):
    root, sums, _ = model
    size = os.path.getsize(os.path.join(root, "model.safetensors"))
    srv = nginx(root)
    m = mount(srv.url, {"cache_mem": "512M", "block_size": "1M",
                        "connections": "8"})
    got = name_order_mmap(m.file("model.safetensors"))
    assert got == sums
    st = m.stats()
    assert st["bytes_fetched"] <= size * 1.05, (st["bytes_fetched"], size)
    # No block in two requests, none fetched per kernel read.
    assert st["requests"] <= -(-size // MiB), st


def test_backwards_name_order_fetches_whole_tensors(nginx, mount, model):
    """64 tensors of 3 MiB whose names run backwards through the file: they
    are fetched ahead of the reader, in name order (192 blocks of 1 MiB),
    each byte once."""
    root, _, sums = model
    size = os.path.getsize(os.path.join(root, "reversed.safetensors"))
    srv = nginx(root)
    m = mount(srv.url, {"cache_mem": "512M", "block_size": "1M",
                        "connections": "8"})
    got = name_order_mmap(m.file("reversed.safetensors"))
    assert got == sums
    st = m.stats()
    blocks = -(-size // MiB)
    assert st["bytes_fetched"] <= size * 1.05, (st["bytes_fetched"], size)
    assert st["requests"] <= blocks, st
    # Fetched ahead of the reader, not as its faults arrive: on 06b0444
    # 149 of the 192 blocks were (the plain readahead goes forward in the
    # file, the reader backwards), here all but the first few.
    assert st["prefetched_blocks"] >= 0.95 * blocks, st


def fetched_ranges(srv, name):
    """[(first, last)] byte ranges of the GETs of @name logged so far."""
    out = []
    for r in srv.requests():
        if r["method"] == "GET" and r["uri"].endswith(name) and \
                r["range"].startswith("bytes="):
            a, b = r["range"][6:].split("-")
            out.append((int(a), int(b)))
    return out


def test_first_data_read_fetches_first_name_at_file_end(nginx, mount,
                                                       tmp_path):
    """Before the readers' order is known, the window takes the start of
    both orders: the first read of a tensor starts fetching the tensor
    that comes first by name, even at the file's end (lm_head in a llama
    file), unread, so a safe_open reader does not wait for it. (The window
    followed the name order from the tensor read, after which that name
    never comes.)"""
    root = tmp_path / "order"
    root.mkdir()
    specs = [("b.%03d" % i, "BF16", [512, 1024]) for i in range(48)]
    specs.append(("a.first_by_name", "BF16", [512, 1024]))
    write_safetensors(str(root / "m.safetensors"), specs, 6)
    srv = nginx(str(root))
    m = mount(srv.url, {"block_size": "1M", "readahead_max": "16M",
                        "connections": "4"})
    with open(m.file("m.safetensors"), "rb") as f:
        header, start = lib.parse_safetensors_header(f)
        first, last = header["a.first_by_name"]["data_offsets"]
        # Past what the header's read brought into the page cache (and
        # the plain readahead for it, while the header was parsed).
        b0, e0 = header["b.016"]["data_offsets"]
        assert os.pread(f.fileno(), 1, start + (b0 + e0) // 2)
    tail = start + last - 1

    deadline = time.monotonic() + 10
    while not any(a <= tail <= b
                  for a, b in fetched_ranges(srv, "m.safetensors")):
        assert time.monotonic() < deadline, \
            fetched_ranges(srv, "m.safetensors")
        time.sleep(0.05)
    st = m.stats()
    # A window of readahead_max / 8 (2 MiB), not the file (49 MiB).
    assert st["bytes_fetched"] <= 12 * MiB, st


def test_header_only_reader_starts_no_tensor_window(nginx, mount, tmp_path):
    """Reading the header alone (listing the tensors, as safe_open(...)
    .keys() does) fetches the first blocks as any first read does, not a
    window of tensors: the kernel's read for the header runs on into the
    first tensor, and counting that as a tensor read started a window of
    readahead_max / 8 (here the whole 48 MiB), and held the header's reply
    back while it was queued."""
    root = tmp_path / "hdr"
    root.mkdir()
    specs = [("t.%03d" % i, "BF16", [512, 1024]) for i in range(48)]
    write_safetensors(str(root / "m.safetensors"), specs, 7)
    srv = nginx(str(root))
    m = mount(srv.url, {"block_size": "1M", "readahead_max": "512M",
                        "connections": "4"})
    with open(m.file("m.safetensors"), "rb") as f:
        header, _ = lib.parse_safetensors_header(f)
    assert len(header) == 48
    time.sleep(1)  # let any readahead it started arrive
    st = m.stats()
    # The block read, the plain readahead's first step (two blocks) and
    # the block after the header's, fetched while it was parsed.
    assert st["bytes_fetched"] <= 4 * MiB, (st, fetched_ranges(
        srv, "m.safetensors"))


def test_not_safetensors_named_file_reads_plainly(nginx, mount, tmp_path):
    """A .safetensors name on a file that is not one: the plain readahead,
    right bytes."""
    root = tmp_path / "bad"
    root.mkdir()
    p = str(root / "x.safetensors")
    lib.write_random(p, 9 * MiB, seed=5)
    srv = nginx(str(root))
    m = mount(srv.url, {"block_size": "1M"})
    with open(m.file("x.safetensors"), "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        got = hashlib.sha256(mm[:]).hexdigest()
        mm.close()
    assert got == lib.sha256_file(p)
