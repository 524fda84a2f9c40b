// Loading a library of cellflow's own on demand: the parts that need heavy
// dependencies (ITK: libcellflow_itk.so; MPI: libcellflow_mpi.so) are kept
// out of the libraries every process maps, and loaded the first time they
// are used. Thread-safe (dlopen is).
#pragma once

#include <string>

namespace cellflow {

/// dlopen()s `name` from the folder of the library that contains `anchor`
/// (an address in the caller's library: the build tree and an install keep
/// them side by side), else wherever the dynamic loader finds it, and returns
/// the address of its symbol `entry`. `global`: RTLD_GLOBAL (a library whose
/// own plugins resolve symbols against it, like Open MPI). Throws Error naming
/// the library, `purpose` and the loader's messages when it fails.
void* load_library_beside(const void* anchor, const std::string& name, const char* entry,
                          bool global, const std::string& purpose);

}  // namespace cellflow
