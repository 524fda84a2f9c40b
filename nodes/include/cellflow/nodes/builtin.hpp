// The built-in operators of cellflow: synthetic.blobs, gaussian, threshold,
// region.density, cast and rescale. Registration is explicit; builtin_registry()
// is a process-wide registry holding them, initialized once, thread-safe.
#pragma once

#include "cellflow/graph/registry.hpp"

namespace cellflow::nodes {

/// Adds every built-in op to `registry`. Throws InvalidArgument if one of
/// their names is already registered there.
void register_builtin_ops(Registry& registry);

/// A process-wide registry with the built-in ops registered (on first use,
/// thread-safe). Plugins may add their ops to it.
Registry& builtin_registry();

}  // namespace cellflow::nodes
