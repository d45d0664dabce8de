"""weightfs.numpy.load_file: like safetensors.numpy.load_file, through
libweightfs.

NumPy has no bfloat16 or float8 types; with the ml_dtypes package installed
those tensors come back in its types, otherwise as raw bits (BF16 as
uint16, the 8-bit floats as uint8). F4 and F6 tensors come back as their
packed bytes (uint8), with the last dimension in bytes.
"""

import numpy as np

from ._lib import Model

_PLAIN = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16,
          "U16": np.uint16, "F16": np.float16, "I32": np.int32,
          "U32": np.uint32, "F32": np.float32, "F64": np.float64,
          "I64": np.int64, "U64": np.uint64, "C64": np.complex64}
_EXTRA = {"BF16": ("bfloat16", np.uint16),
          "F8_E4M3": ("float8_e4m3fn", np.uint8),
          "F8_E5M2": ("float8_e5m2", np.uint8),
          "F8_E8M0": ("float8_e8m0fnu", np.uint8)}
_SUBBYTE = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}

try:
    import ml_dtypes
except ImportError:
    ml_dtypes = None


def numpy_dtype(dtype):
    """The NumPy dtype a safetensors dtype is returned as."""
    if dtype in _PLAIN:
        return np.dtype(_PLAIN[dtype])
    if dtype in _EXTRA:
        name, raw = _EXTRA[dtype]
        if ml_dtypes is not None and hasattr(ml_dtypes, name):
            return np.dtype(getattr(ml_dtypes, name))
        return np.dtype(raw)
    return np.dtype(np.uint8)


def packed_shape(dtype, shape, nbytes):
    """The shape F4/F6 bytes are returned in; other shapes unchanged."""
    bits = _SUBBYTE.get(dtype)
    if bits is None:
        return shape
    if shape and shape[-1] * bits % 8 == 0:
        return shape[:-1] + (shape[-1] * bits // 8,)
    return (nbytes,)


def load_file(filename, threads=0, direct_io="auto", stats=None,
              select=None):
    """Load a .safetensors file or model directory into host memory.
    Returns dict[str, numpy.ndarray], views of one allocation that the
    library made (on a weightfs mount, memory the daemon writes into
    itself: no copy in this process). It is freed when the last of the
    arrays (or of the views made from them) is gone.
    @stats: a dict to fill with what the load did (Model.load's).
    @select: load a part (Model.select()'s arguments as a dict)."""
    m = Model(filename)
    try:
        if select:
            m.select(**select)
        s = m.load("cpu", threads=threads, direct_io=direct_io)
        infos = m.tensors()
        mem = m.host_memory()
    finally:
        m.close()  # after host_memory(): nothing left to close
    if stats is not None:
        stats.update(s)
    return views(np.frombuffer(mem, dtype=np.uint8), infos)


def views(buf, infos):
    """{name: array} of @infos' tensors in @buf (uint8), by name."""
    out = {}
    for t in sorted(infos, key=lambda t: t.name):
        a = buf[t.offset:t.offset + t.nbytes].view(numpy_dtype(t.dtype))
        out[t.name] = a.reshape(packed_shape(t.dtype, t.shape, t.nbytes))
    return out
