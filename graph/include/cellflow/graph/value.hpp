// Value (the JSON-like dynamic value of params and definitions) lives in cache/;
// this header keeps the graph-layer include path.
#pragma once

#include "cellflow/cache/value.hpp"
