// Dims: a small fixed-capacity vector of int64 for shapes, indexes and offsets
// of images of rank 1 to kMaxRank. A value type; no synchronization needed.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

namespace cellflow {

inline constexpr int kMaxRank = 5;

class Dims {
 public:
  Dims() = default;
  Dims(std::initializer_list<int64_t> values);
  /// REQUIRES: 0 <= rank <= kMaxRank.
  explicit Dims(int rank, int64_t fill = 0);
  static Dims from(std::span<const int64_t> values);

  int rank() const { return rank_; }
  bool empty() const { return rank_ == 0; }
  int64_t& operator[](int i) { return v_[static_cast<size_t>(i)]; }
  int64_t operator[](int i) const { return v_[static_cast<size_t>(i)]; }
  const int64_t* begin() const { return v_.data(); }
  const int64_t* end() const { return v_.data() + rank_; }
  int64_t* begin() { return v_.data(); }
  int64_t* end() { return v_.data() + rank_; }

  /// Product of all entries (1 for rank 0).
  int64_t product() const;
  std::vector<int64_t> to_vector() const { return {begin(), end()}; }
  /// "(2,5,1)".
  std::string str() const;

  friend bool operator==(const Dims& a, const Dims& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a[i] != b[i]) return false;
    return true;
  }

 private:
  std::array<int64_t, kMaxRank> v_{};
  int rank_ = 0;
};

using Shape = Dims;
using CellIndex = Dims;

}  // namespace cellflow
