"""ctypes bindings of weightfs.h, and the Model class the loaders share."""

import ctypes
import ctypes.util
import os
import weakref
from collections import namedtuple
from pathlib import Path

DEVICE_CPU = -1

DTYPES = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
          "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64", "C64",
          "F4", "F6_E2M3", "F6_E3M2"]

DIRECT_IO = {"auto": 0, "never": 1, "always": 2}

TensorInfo = namedtuple("TensorInfo", "name dtype shape nbytes offset file")
TensorInfo.__doc__ = """One tensor: dtype as the file spells it ("BF16"),
shape as a tuple, nbytes, offset in the model's allocation, source file."""


class WeightfsError(OSError):
    """A libweightfs call failed: errno and libweightfs' message."""


class _Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int),
                ("ndim", ctypes.c_uint),
                ("shape", ctypes.POINTER(ctypes.c_uint64)),
                ("nbytes", ctypes.c_uint64), ("offset", ctypes.c_uint64),
                ("data", ctypes.c_void_p), ("file", ctypes.c_char_p)]


_PROGRESS = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64,
                             ctypes.c_uint64)


class _LoadOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("device", ctypes.c_int),
                ("threads", ctypes.c_uint),
                ("staging_bytes", ctypes.c_size_t),
                ("chunk_bytes", ctypes.c_size_t),
                ("alignment", ctypes.c_size_t), ("direct_io", ctypes.c_int),
                ("dest", ctypes.c_void_p), ("dest_bytes", ctypes.c_size_t),
                ("progress", _PROGRESS), ("progress_arg", ctypes.c_void_p)]


class _Stats(ctypes.Structure):
    _fields_ = [("path", ctypes.c_int), ("bytes", ctypes.c_uint64),
                ("seconds", ctypes.c_double), ("threads", ctypes.c_uint),
                ("staging_bytes", ctypes.c_size_t),
                ("direct_io_files", ctypes.c_uint),
                ("bytes_copied", ctypes.c_uint64),
                ("setup_seconds", ctypes.c_double),
                ("staging", ctypes.c_int)]

_STAGING = {0: "none", 1: "host", 2: "shared", 3: "host_alloc"}


def _candidates():
    if os.environ.get("WEIGHTFS_LIB"):
        yield os.environ["WEIGHTFS_LIB"]
        return
    if os.environ.get("WEIGHTFS_BUILD"):
        yield str(Path(os.environ["WEIGHTFS_BUILD"]) / "loader" /
                  "libweightfs.so")
    here = Path(__file__).resolve().parent
    try:  # installed by meson: the library installed with this package
        from ._config import LIBWEIGHTFS
        yield LIBWEIGHTFS
    except ImportError:
        pass
    yield str(here / "libweightfs.so")
    name = ctypes.util.find_library("weightfs")  # ldconfig's cache
    if name:
        yield name
    yield "libweightfs.so.0"  # the dynamic linker's own search
    if len(here.parents) > 2:
        yield str(here.parents[2] / "build" / "loader" / "libweightfs.so")


def _load_library():
    errors = []
    for cand in _candidates():
        try:
            return ctypes.CDLL(cand)
        except OSError as e:
            errors.append(str(e))
    raise ImportError("libweightfs not found (set WEIGHTFS_LIB): " +
                      "; ".join(errors))


_lib = _load_library()


def _fn(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = argtypes
    return f


_version_string = _fn("wfs_version_string", ctypes.c_char_p)
_last_error = _fn("wfs_last_error", ctypes.c_char_p)
_device_parse = _fn("wfs_device_parse", ctypes.c_int, ctypes.c_char_p,
                    ctypes.POINTER(ctypes.c_int))
_opts_init = _fn("wfs_load_opts_init", ctypes.c_int,
                 ctypes.POINTER(_LoadOpts), ctypes.c_size_t)
_open = _fn("wfs_model_open", ctypes.c_int, ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_void_p))
_free = _fn("wfs_model_free", None, ctypes.c_void_p)
_count = _fn("wfs_model_tensor_count", ctypes.c_size_t, ctypes.c_void_p)
_tensor = _fn("wfs_model_tensor", ctypes.POINTER(_Tensor), ctypes.c_void_p,
              ctypes.c_size_t)
_metadata = _fn("wfs_model_metadata", ctypes.c_char_p, ctypes.c_void_p,
                ctypes.c_char_p)
_alloc_size = _fn("wfs_model_alloc_size", ctypes.c_uint64, ctypes.c_void_p,
                  ctypes.c_size_t)
_load = _fn("wfs_model_load", ctypes.c_int, ctypes.c_void_p,
            ctypes.POINTER(_LoadOpts))
_stats = _fn("wfs_model_stats", ctypes.POINTER(_Stats), ctypes.c_void_p)
_close_files = _fn("wfs_model_close_files", None, ctypes.c_void_p)
_sel_new = _fn("wfs_select_new", ctypes.c_int,
               ctypes.POINTER(ctypes.c_void_p))
_sel_free = _fn("wfs_select_free", None, ctypes.c_void_p)
_sel_name = _fn("wfs_select_name", ctypes.c_int, ctypes.c_void_p,
                ctypes.c_char_p)
_sel_shard = _fn("wfs_select_shard", ctypes.c_int, ctypes.c_void_p,
                 ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint64,
                 ctypes.c_uint64)
_sel_slice = _fn("wfs_select_slice", ctypes.c_int, ctypes.c_void_p,
                 ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint64,
                 ctypes.c_uint64)
_model_select = _fn("wfs_model_select", ctypes.c_int, ctypes.c_void_p,
                    ctypes.c_void_p)
_iter_new = _fn("wfs_iter_new", ctypes.c_int, ctypes.c_void_p,
                ctypes.POINTER(_LoadOpts), ctypes.POINTER(ctypes.c_void_p))
_iter_next = _fn("wfs_iter_next", ctypes.c_int, ctypes.c_void_p,
                 ctypes.POINTER(ctypes.POINTER(_Tensor)))
_iter_free = _fn("wfs_iter_free", None, ctypes.c_void_p)
_data = _fn("wfs_model_data", ctypes.c_void_p, ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_uint64))


def version():
    """The version of the libweightfs in use, e.g. "0.1.0"."""
    return _version_string().decode()


def _check(r):
    if r < 0:
        msg = _last_error().decode(errors="replace")
        raise WeightfsError(-r, msg or os.strerror(-r))
    return r


def parse_device(device):
    """"cpu", "cuda", "cuda:N" (or a torch.device) -> -1 or N."""
    out = ctypes.c_int()
    _check(_device_parse(str(device).encode(), ctypes.byref(out)))
    return out.value


class Model:
    """A safetensors model (a file, or a directory of shards) opened with
    libweightfs: headers are read and checked, no tensor data yet."""

    def __init__(self, path):
        self._h = None
        handle = ctypes.c_void_p()
        _check(_open(os.fsencode(path), ctypes.byref(handle)))
        self._h = handle

    def close(self):
        if self._h:
            _free(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def tensors(self):
        """TensorInfo of every tensor, in load order."""
        out = []
        for i in range(_count(self._h)):
            t = _tensor(self._h, i).contents
            out.append(TensorInfo(
                t.name.decode("utf-8", errors="surrogateescape"),
                DTYPES[t.dtype], tuple(t.shape[k] for k in range(t.ndim)),
                t.nbytes, t.offset, os.fsdecode(t.file)))
        return out

    def select(self, tensors=None, shard=None, shard_dims=None,
               slices=None):
        """Load only a part of the model from now on (tensors() shows it):
        @tensors: glob patterns (any matches; None: all); @shard: (rank,
        world), cutting the tensors matching @shard_dims ({glob: dim},
        first match wins; None: {"*": 0}) into world equal parts along
        that dim (tensors with too few dims whole); @slices: {glob: (dim,
        start, length)}, tried before the shard rules. Only the selected
        bytes are read. A slice that splits a byte of packed F4/F6
        elements raises WeightfsError."""
        h = ctypes.c_void_p()
        _check(_sel_new(ctypes.byref(h)))
        try:
            for p in tensors or ():
                _check(_sel_name(h, p.encode()))
            for p, (dim, start, length) in (slices or {}).items():
                _check(_sel_slice(h, p.encode(), dim, start, length))
            if shard is not None:
                rank, world = shard
                for p, dim in (shard_dims or {"*": 0}).items():
                    _check(_sel_shard(h, p.encode(), dim, rank, world))
            _check(_model_select(self._h, h))
        finally:
            _sel_free(h)

    def metadata(self, key):
        """A __metadata__ value, or None."""
        v = _metadata(self._h, key.encode())
        return v.decode() if v is not None else None

    def alloc_size(self, alignment=0):
        """Bytes a destination needs for every tensor."""
        return _alloc_size(self._h, alignment)

    def load(self, device="cpu", dest=None, dest_bytes=0, threads=0,
             staging_bytes=0, chunk_bytes=0, direct_io="auto"):
        """Load every tensor into @dest (an address on @device, at least
        alloc_size() bytes, 256-byte aligned), or into an allocation the
        model owns if dest is None. Returns the load's statistics."""
        opts = _LoadOpts()
        _check(_opts_init(ctypes.byref(opts), ctypes.sizeof(opts)))
        opts.device = device if isinstance(device, int) else \
            parse_device(device)
        opts.threads = threads
        opts.staging_bytes = staging_bytes
        opts.chunk_bytes = chunk_bytes
        opts.direct_io = DIRECT_IO[direct_io]
        if dest is not None:
            opts.dest = dest
            opts.dest_bytes = dest_bytes
        _check(_load(self._h, ctypes.byref(opts)))
        s = _stats(self._h).contents
        return {"path": "fastpath" if s.path == 1 else "direct",
                "bytes": s.bytes, "seconds": s.seconds,
                "threads": s.threads, "staging_bytes": s.staging_bytes,
                "direct_io_files": s.direct_io_files,
                "bytes_copied": s.bytes_copied,
                "setup_seconds": s.setup_seconds,
                "staging": _STAGING.get(s.staging, str(s.staging))}

    def iterate(self, device="cpu", dest=None, dest_bytes=0, threads=0,
                staging_bytes=0):
        """Yield (TensorInfo, address) for each tensor in load order,
        loaded into @dest (an address on @device of @dest_bytes, at least
        the largest tensor's) or a buffer the iterator owns, in groups: the
        bytes at an address are valid until the next one is yielded."""
        opts = _LoadOpts()
        _check(_opts_init(ctypes.byref(opts), ctypes.sizeof(opts)))
        opts.device = device if isinstance(device, int) else \
            parse_device(device)
        opts.threads = threads
        opts.staging_bytes = staging_bytes
        if dest is not None:
            opts.dest = dest
            opts.dest_bytes = dest_bytes
        it = ctypes.c_void_p()
        _check(_iter_new(self._h, ctypes.byref(opts), ctypes.byref(it)))
        try:
            t = ctypes.POINTER(_Tensor)()
            while _check(_iter_next(it, ctypes.byref(t))):
                c = t.contents
                yield TensorInfo(
                    c.name.decode("utf-8", errors="surrogateescape"),
                    DTYPES[c.dtype], tuple(c.shape[k] for k in
                                           range(c.ndim)),
                    c.nbytes, c.offset, os.fsdecode(c.file)), c.data
        finally:
            _iter_free(it)

    def data(self):
        """(address, bytes) of the allocation the last load filled, or
        (None, 0) when not loaded."""
        n = ctypes.c_uint64()
        p = _data(self._h, ctypes.byref(n))
        return (p, n.value) if p else (None, 0)

    def host_memory(self):
        """The host allocation the model owns after load("cpu") (no dest),
        as a writable ctypes byte array, without a copy. The array owns
        this model: the model (and the memory) is freed when the array
        and everything made from it (numpy arrays, torch tensors) are
        gone, never earlier, and no longer by close() or `with`."""
        p, n = self.data()
        if p is None:
            raise WeightfsError(61, "model not loaded")  # ENODATA
        mem = (ctypes.c_ubyte * n).from_address(p)
        # The memory belongs to the array from now on; the files are done
        # with (holding the arrays must not keep a mount busy).
        _close_files(self._h)
        handle, self._h = self._h, None
        done = weakref.finalize(mem, _free, handle)
        # At interpreter exit arrays may outlive the finalizer's turn:
        # leave the memory to the process's end, never free it under them.
        done.atexit = False
        return mem
