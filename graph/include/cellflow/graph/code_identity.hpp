// CodeIdentity: which loaded object (shared library or executable) implements
// an op, and its ELF build-id: the NT_GNU_BUILD_ID note the linker derives
// from the object's contents (-Wl,--build-id, Debian's gcc default). A rebuild
// that changes the code changes the build-id. Used by GraphOptions::strict_code.
// Thread-safe (dl_iterate_phdr holds the loader's lock while it runs).
#pragma once

#include <optional>
#include <string>

namespace cellflow {

class Op;

struct CodeIdentity {
  std::string library;   // the object's path ("/proc/self/exe" target for the program)
  std::string build_id;  // lowercase hex; empty if the object carries none
};

/// The loaded object whose segments contain `address`; nullopt if none does.
std::optional<CodeIdentity> code_identity_of(const void* address);
/// The object that implements `op` (the one holding its vtable, where the
/// compiler emits the op's virtual functions).
std::optional<CodeIdentity> code_identity(const Op& op);

}  // namespace cellflow
