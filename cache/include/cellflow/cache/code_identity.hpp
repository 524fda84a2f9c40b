// CodeIdentity: which loaded object (shared library or executable) holds a
// piece of code, and its ELF build-id: the NT_GNU_BUILD_ID note the linker
// derives from the object's contents (-Wl,--build-id, Debian's gcc default).
// A rebuild that changes the code changes the build-id. Used by Memo (a
// memoized function's code) and GraphOptions::strict_code (an op's).
// Thread-safe (dl_iterate_phdr holds the loader's lock while it runs).
#pragma once

#include <optional>
#include <string>

namespace cellflow {

struct CodeIdentity {
  std::string library;   // the object's path ("/proc/self/exe" target for the program)
  std::string build_id;  // lowercase hex; empty if the object carries none
};

/// The loaded object whose segments contain `address`; nullopt if none does.
std::optional<CodeIdentity> code_identity_of(const void* address);

}  // namespace cellflow
