#include "cellflow/cache/table_store.hpp"

#include <unistd.h>

#include <cstring>

#include "cellflow/cache/files.hpp"
#include "cellflow/cache/zarr_array.hpp"

namespace cellflow {
namespace fs = std::filesystem;

fs::path TableStore::cell_path(const CellIndex& cell) const {
  fs::path p = path_;
  for (int64_t i : cell) p /= std::to_string(i);
  return p;
}

std::optional<CellBuffer> TableStore::read(const CellIndex& cell) {
  const fs::path file = cell_path(cell);
  auto stored = read_file(file);
  if (!stored) return std::nullopt;
  const std::string bytes = ZarrArray::decode_chunk_any(*stored, "file " + file.string());
  CellBuffer out = CellBuffer::allocate(DType::kU8, Shape{static_cast<int64_t>(bytes.size())});
  if (!bytes.empty()) std::memcpy(out.mutable_data(), bytes.data(), bytes.size());
  return out;
}

void TableStore::write(const CellIndex& cell, const CellBuffer& buffer) {
  write_file_atomic(cell_path(cell), ZarrArray::encode_chunk(buffer.data(), buffer.num_bytes(), 1));
}

bool TableStore::contains(const CellIndex& cell) {
  return ::access(cell_path(cell).c_str(), F_OK) == 0;
}

void TableStore::remove(const CellIndex& cell) {
  std::error_code ec;
  fs::remove(cell_path(cell), ec);
}

namespace {
// A table's cells are linearized by their index in a notional grid; the lock
// byte only needs to be unique per cell.
int64_t lock_byte(const CellIndex& cell) {
  int64_t linear = 0;
  for (int64_t i : cell) linear = linear * 1000003 + i;
  return linear;
}
}  // namespace

std::shared_ptr<void> TableStore::lock(const CellIndex& cell) {
  return locks_.lock(lock_byte(cell));
}

bool TableStore::locked_elsewhere(const CellIndex& cell) {
  return locks_.held_elsewhere(lock_byte(cell));
}

}  // namespace cellflow
