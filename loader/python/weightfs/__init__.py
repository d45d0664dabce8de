"""weightfs: load safetensors models into GPU or host memory, fast.

A thin ctypes layer over libweightfs; the work happens in C.

    import weightfs.torch
    tensors = weightfs.torch.load_file("model-dir", device="cuda:0")

    import weightfs.numpy
    arrays = weightfs.numpy.load_file("model.safetensors")

libweightfs is found through $WEIGHTFS_LIB (a path to the .so), then
$WEIGHTFS_BUILD/loader, then where meson installed it with this package,
then the system's library path, then a build/ directory of the source tree
this package sits in.
"""

from ._lib import Model, TensorInfo, WeightfsError, version

__all__ = ["Model", "TensorInfo", "WeightfsError", "version"]
__version__ = version()  # the library's: one version, meson.build's
