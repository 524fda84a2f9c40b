#include "cellflow/graph/code_identity.hpp"

#include <cstring>

#include "cellflow/graph/op.hpp"

namespace cellflow {

std::optional<CodeIdentity> code_identity(const Op& op) {
  // Itanium C++ ABI: a polymorphic object starts with its vtable pointer, and
  // the vtable is emitted in the object that defines the class's key function.
  const void* vtable = nullptr;
  std::memcpy(&vtable, static_cast<const void*>(&op), sizeof vtable);
  return code_identity_of(vtable);
}

}  // namespace cellflow
