// The code identity of an op: the loaded object that implements it and its
// ELF build-id (cache/code_identity.hpp). Used by GraphOptions::strict_code.
// Thread-safe.
#pragma once

#include <optional>

#include "cellflow/cache/code_identity.hpp"

namespace cellflow {

class Op;

/// The object that implements `op` (the one holding its vtable, where the
/// compiler emits the op's virtual functions).
std::optional<CodeIdentity> code_identity(const Op& op);

}  // namespace cellflow
