// Table: rows of float64 columns and their stored form (Table::serialize /
// deserialize), including damaged bytes that must be refused.
#include "cellflow/cache/table.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "cellflow/cache/error.hpp"

namespace cellflow {
namespace {

std::string u64(uint64_t v) {
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

const std::string kMagic = "CFLWTAB1";

TEST(TableTest, SerializeRoundTrips) {
  Table t({"label", "volume"});
  const double a[] = {1, 27};
  const double b[] = {2, 8.5};
  t.add_row(a);
  t.add_row(b);
  const std::string bytes = t.serialize();
  EXPECT_EQ(Table::deserialize(bytes, "t"), t);
  EXPECT_EQ(Table::deserialize(Table().serialize(), "t"), Table());
  EXPECT_THROW(Table::deserialize(bytes.substr(0, bytes.size() - 1), "t"), CorruptionError);
  EXPECT_THROW(Table::deserialize(bytes + std::string(8, '\0'), "t"), CorruptionError);
}

// Found by tests/fuzz (fuzz_table): bytes after a table of no columns were
// ignored, so a damaged cell read as an empty table.
TEST(TableTest, RefusesBytesAfterATableOfNoColumns) {
  EXPECT_THROW(Table::deserialize(Table().serialize() + std::string("\0\0@", 3), "t"),
               CorruptionError);
}

// A row count whose size in bytes wraps around 2^64 matched the bytes left
// (8 here) and then sized the values by the count itself.
TEST(TableTest, RefusesARowCountThatWrapsAround) {
  const std::string bytes =
      kMagic + u64(1) + u64(1) + "x" + u64((uint64_t{1} << 61) + 1) + std::string(8, '\0');
  EXPECT_THROW(Table::deserialize(bytes, "t"), CorruptionError);
}

// A column name length that wraps the read position around 2^64 back into
// the header was accepted as a table of one unnamed column.
TEST(TableTest, RefusesAColumnNameLengthThatWrapsAround) {
  const std::string bytes = kMagic + u64(1) + u64(~uint64_t{0} - 15);
  EXPECT_THROW(Table::deserialize(bytes, "t"), CorruptionError);
}

}  // namespace
}  // namespace cellflow
