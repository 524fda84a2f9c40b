// "Did you mean": the known names nearest to a misspelt one, by edit distance.
// Pure functions; safe from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace cellflow {

/// The names of `known` within a small edit distance of `word` (at most a
/// third of its length, at least 1; case-insensitive), nearest first, at most 3.
std::vector<std::string> nearest_names(std::string_view word,
                                       const std::vector<std::string>& known);

/// " (did you mean \"a\" or \"b\"?)", or "" when nothing is near.
std::string did_you_mean(std::string_view word, const std::vector<std::string>& known);

}  // namespace cellflow
