#include "cellflow/cache/dims.hpp"

#include <fmt/format.h>

#include "cellflow/cache/error.hpp"

namespace cellflow {

Dims::Dims(std::initializer_list<int64_t> values) {
  if (values.size() > static_cast<size_t>(kMaxRank))
    throw InvalidArgument(
        fmt::format("rank {} exceeds the maximum of {}", values.size(), kMaxRank));
  for (int64_t v : values) v_[static_cast<size_t>(rank_++)] = v;
}

Dims::Dims(int rank, int64_t fill) {
  if (rank < 0 || rank > kMaxRank)
    throw InvalidArgument(fmt::format("rank {} is outside 0..{}", rank, kMaxRank));
  rank_ = rank;
  for (int i = 0; i < rank; ++i) v_[static_cast<size_t>(i)] = fill;
}

Dims Dims::from(std::span<const int64_t> values) {
  Dims d(static_cast<int>(values.size() > kMaxRank ? kMaxRank + 1 : values.size()));
  for (int i = 0; i < d.rank(); ++i) d[i] = values[static_cast<size_t>(i)];
  return d;
}

int64_t Dims::product() const {
  int64_t p = 1;
  for (int i = 0; i < rank_; ++i) p *= v_[static_cast<size_t>(i)];
  return p;
}

std::string Dims::str() const { return fmt::format("({})", fmt::join(begin(), end(), ",")); }

}  // namespace cellflow
