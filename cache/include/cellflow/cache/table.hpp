// Table: rows of named float64 columns — the output of table ops such as
// label.stats (one row per object). Each cell of a table node holds the rows
// its region produced; reads merge them. A value type; no synchronization.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cellflow {

class Table {
 public:
  Table() = default;
  explicit Table(std::vector<std::string> columns) : columns_(std::move(columns)) {}

  const std::vector<std::string>& columns() const { return columns_; }
  size_t num_columns() const { return columns_.size(); }
  size_t num_rows() const { return columns_.empty() ? 0 : values_.size() / columns_.size(); }
  /// Index of a column, or -1.
  int column(std::string_view name) const;

  /// REQUIRES: values.size() == num_columns().
  void add_row(std::span<const double> values);
  std::span<const double> row(size_t r) const {
    return {values_.data() + r * columns_.size(), columns_.size()};
  }
  double at(size_t r, size_t c) const { return values_[r * columns_.size() + c]; }
  /// Appends the rows of `other`. REQUIRES: same columns (or this table empty).
  void append(const Table& other);
  /// Stable sort of the rows by one column, ascending.
  void sort_by(size_t column);

  /// Compact binary form (what a table cell stores).
  std::string serialize() const;
  /// Throws CorruptionError naming `what` if the bytes are not a table.
  static Table deserialize(std::string_view bytes, const std::string& what);
  /// CSV with a header line; integral values are written without a fraction.
  std::string to_csv() const;

  friend bool operator==(const Table& a, const Table& b) {
    return a.columns_ == b.columns_ && a.values_ == b.values_;
  }

 private:
  std::vector<std::string> columns_;
  std::vector<double> values_;  // row-major
};

}  // namespace cellflow
