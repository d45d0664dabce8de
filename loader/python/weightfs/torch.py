"""weightfs.torch.load_file: a drop-in for safetensors.torch.load_file,
through libweightfs (pinned, pipelined staging; one allocation per model).

Where the installed PyTorch lacks a dtype (uint16/32/64 before 2.3, the
float8 types before 2.1, ...), the tensor comes back as a view of its raw
bits in a type of the same width (uint16 -> int16, F8_E4M3 -> uint8), with
a warning; pass raw_fallback=False to get an error instead. F6 tensors come
back as packed bytes (uint8).
"""

import warnings

import torch

from ._lib import Model
from .numpy import packed_shape

ALIGN = 256

# safetensors dtype -> (torch attribute, raw-bits fallback)
_TYPES = {"BOOL": ("bool", None), "U8": ("uint8", None),
          "I8": ("int8", None), "I16": ("int16", None),
          "U16": ("uint16", "int16"), "F16": ("float16", None),
          "BF16": ("bfloat16", None), "I32": ("int32", None),
          "U32": ("uint32", "int32"), "F32": ("float32", None),
          "F64": ("float64", None), "I64": ("int64", None),
          "U64": ("uint64", "int64"), "C64": ("complex64", None),
          "F8_E4M3": ("float8_e4m3fn", "uint8"),
          "F8_E5M2": ("float8_e5m2", "uint8"),
          "F8_E8M0": ("float8_e8m0fnu", "uint8"),
          "F4": ("float4_e2m1fn_x2", "uint8"),
          "F6_E2M3": (None, "uint8"), "F6_E3M2": (None, "uint8")}


def torch_dtype(dtype):
    """(torch.dtype, exact) for a safetensors dtype: exact is False when
    the type is a raw-bits stand-in."""
    name, raw = _TYPES[dtype]
    if name and hasattr(torch, name):
        return getattr(torch, name), True
    return getattr(torch, raw), False


def _shape(dtype, shape, nbytes):
    if dtype == "F4" and hasattr(torch, "float4_e2m1fn_x2"):
        # float4_e2m1fn_x2 holds two elements per byte.
        return packed_shape(dtype, shape, nbytes)
    if dtype in ("F4", "F6_E2M3", "F6_E3M2"):
        return packed_shape(dtype, shape, nbytes)
    return shape


def load_file(filename, device="cpu", raw_fallback=True, threads=0,
              direct_io="auto", stats=None, select=None):
    """Load a .safetensors file or model directory onto @device ("cpu",
    "cuda", "cuda:N" or a torch.device). Returns dict[str, torch.Tensor],
    views of one allocation on the device. On the CPU the allocation is
    the library's (on a weightfs mount the daemon writes into it: no copy
    in this process), freed when the last tensor viewing it is gone.
    @stats: a dict to fill with what the load did (Model.load's).
    @select: load a part: a dict of Model.select()'s arguments, e.g.
    {"shard": (rank, world), "shard_dims": {"*.o_proj.weight": 1, "*": 0}}
    or {"tensors": ["*.layers.0.*"]}; only those bytes are read."""
    dev = torch.device(device)
    if dev.type == "cpu":
        ordinal = -1
    elif dev.type == "cuda":
        ordinal = dev.index if dev.index is not None else \
            torch.cuda.current_device()
        dev = torch.device("cuda", ordinal)
    else:
        raise ValueError(f"weightfs loads to cpu or cuda, not {dev.type}")
    m = Model(filename)
    try:
        if select:
            m.select(**select)
        infos = m.tensors()
        stand_ins = sorted({t.dtype for t in infos
                            if not torch_dtype(t.dtype)[1]})
        if stand_ins and not raw_fallback:
            raise TypeError(f"this PyTorch ({torch.__version__}) has no "
                            f"dtype for {', '.join(stand_ins)}")
        if dev.type == "cpu":
            # Host memory the library allocates (on a weightfs mount,
            # the daemon writes into it itself), wrapped without a copy;
            # freed when the last tensor made from it is gone.
            s = m.load(ordinal, threads=threads, direct_io=direct_io)
            infos = m.tensors()
            raw = torch.frombuffer(m.host_memory(), dtype=torch.uint8)
            start = 0
        else:
            size = m.alloc_size()
            raw = torch.empty(size + ALIGN, dtype=torch.uint8, device=dev)
            start = -raw.data_ptr() % ALIGN
            # The caching allocator may hand back memory that kernels
            # queued on PyTorch's stream still read; the loader writes
            # from streams of its own, so let those kernels finish.
            torch.cuda.current_stream(dev).synchronize()
            s = m.load(ordinal, dest=raw.data_ptr() + start,
                       dest_bytes=size, threads=threads,
                       direct_io=direct_io)
            infos = m.tensors()
    finally:
        m.close()
    if stats is not None:
        stats.update(s)
    if stand_ins:
        warnings.warn(f"PyTorch {torch.__version__} has no dtype for "
                      f"{', '.join(stand_ins)}: returned as raw bits",
                      stacklevel=2)
    out = {}
    for t in sorted(infos, key=lambda t: t.name):
        dt, _ = torch_dtype(t.dtype)
        a = raw[start + t.offset:start + t.offset + t.nbytes]
        out[t.name] = a.view(dt).reshape(_shape(t.dtype, t.shape, t.nbytes))
    return out


def iter_weights(path, device="cpu", select=None, threads=0,
                 staging_bytes=0):
    """Yield (name, torch.Tensor) for each tensor of a .safetensors file or
    model directory, in load order (by file, then offset): the shape of
    vLLM's and SGLang's safetensors_weights_iterator. @select: a part, as
    in load_file(). Tensors are loaded in groups through the pipelined
    staging into one buffer on @device of max(@staging_bytes (default
    256 MiB), the largest tensor): memory stays bounded whatever the
    model's size. A yielded tensor is a view of that buffer, valid until
    the next one is requested: copy it (param.data.copy_(t)) or clone()
    it to keep it."""
    dev = torch.device(device)
    ordinal = -1
    if dev.type == "cuda":
        ordinal = dev.index if dev.index is not None else \
            torch.cuda.current_device()
        dev = torch.device("cuda", ordinal)
    elif dev.type != "cpu":
        raise ValueError(f"weightfs loads to cpu or cuda, not {dev.type}")
    m = Model(path)
    try:
        if select:
            m.select(**select)
        infos = m.tensors()
        if not infos:
            return
        size = max(max(t.nbytes for t in infos), staging_bytes or 256 << 20)
        buf = torch.empty(size + ALIGN, dtype=torch.uint8, device=dev)
        start = -buf.data_ptr() % ALIGN
        if dev.type == "cuda":
            torch.cuda.current_stream(dev).synchronize()
        for info, addr in m.iterate(ordinal, dest=buf.data_ptr() + start,
                                    dest_bytes=size, threads=threads,
                                    staging_bytes=staging_bytes):
            off = addr - buf.data_ptr()
            dt, _ = torch_dtype(info.dtype)
            a = buf[off:off + info.nbytes]
            yield info.name, a.view(dt).reshape(
                _shape(info.dtype, info.shape, info.nbytes))
    finally:
        m.close()
