#include "cellflow/cache/table.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "cellflow/cache/error.hpp"

namespace cellflow {
namespace {

constexpr char kMagic[8] = {'C', 'F', 'L', 'W', 'T', 'A', 'B', '1'};

void put(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

}  // namespace

int Table::column(std::string_view name) const {
  for (size_t i = 0; i < columns_.size(); ++i)
    if (columns_[i] == name) return static_cast<int>(i);
  return -1;
}

void Table::add_row(std::span<const double> values) {
  if (values.size() != columns_.size())
    throw InvalidArgument(fmt::format("a row of {} values for a table of {} columns", values.size(),
                                      columns_.size()));
  values_.insert(values_.end(), values.begin(), values.end());
}

void Table::append(const Table& other) {
  if (columns_.empty() && values_.empty()) columns_ = other.columns_;
  if (other.columns_ != columns_)
    throw InvalidArgument("cannot append a table with different columns");
  values_.insert(values_.end(), other.values_.begin(), other.values_.end());
}

void Table::sort_by(size_t column) {
  const size_t n = num_rows(), w = columns_.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return values_[a * w + column] < values_[b * w + column];
  });
  std::vector<double> sorted;
  sorted.reserve(values_.size());
  for (size_t r : order)
    sorted.insert(sorted.end(), values_.begin() + static_cast<ptrdiff_t>(r * w),
                  values_.begin() + static_cast<ptrdiff_t>((r + 1) * w));
  values_ = std::move(sorted);
}

std::string Table::serialize() const {
  std::string out(kMagic, sizeof kMagic);
  put(out, columns_.size());
  for (const auto& c : columns_) {
    put(out, c.size());
    out += c;
  }
  put(out, num_rows());
  const size_t bytes = values_.size() * sizeof(double);
  const size_t at = out.size();
  out.resize(at + bytes);
  if (bytes > 0) std::memcpy(out.data() + at, values_.data(), bytes);
  return out;
}

Table Table::deserialize(std::string_view bytes, const std::string& what) {
  size_t pos = 0;
  const auto fail = [&](const char* why) {
    return CorruptionError(fmt::format("{}: not a cellflow table ({})", what, why));
  };
  const auto get = [&]() -> uint64_t {
    if (pos + 8 > bytes.size()) throw fail("truncated");
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i)
      v = (v << 8) | static_cast<unsigned char>(bytes[pos + static_cast<size_t>(i)]);
    pos += 8;
    return v;
  };
  if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    throw fail("bad magic");
  pos = sizeof kMagic;
  const uint64_t ncols = get();
  if (ncols > 4096) throw fail("too many columns");
  Table t;
  for (uint64_t i = 0; i < ncols; ++i) {
    const uint64_t len = get();
    if (len > bytes.size() - pos) throw fail("truncated column name");
    t.columns_.emplace_back(bytes.substr(pos, len));
    pos += len;
  }
  const uint64_t rows = get();
  // Sizes are compared by division: rows * ncols * 8 can wrap around.
  const uint64_t left = bytes.size() - pos;
  if (ncols == 0 ? rows != 0 || left != 0
                 : left % (ncols * sizeof(double)) != 0 || rows != left / (ncols * sizeof(double)))
    throw fail("wrong size");
  const uint64_t count = rows * ncols;
  t.values_.resize(count);
  if (count > 0) std::memcpy(t.values_.data(), bytes.data() + pos, count * sizeof(double));
  return t;
}

std::string Table::to_csv() const {
  std::string out;
  for (size_t c = 0; c < columns_.size(); ++c) out += (c ? "," : "") + columns_[c];
  out += '\n';
  for (size_t r = 0; r < num_rows(); ++r) {
    for (size_t c = 0; c < columns_.size(); ++c) {
      const double v = at(r, c);
      if (c) out += ',';
      if (std::isfinite(v) && v == std::trunc(v) && std::abs(v) < 9.0e15)
        out += fmt::format("{}", static_cast<int64_t>(v));
      else
        out += fmt::format("{}", v);
    }
    out += '\n';
  }
  return out;
}

}  // namespace cellflow
