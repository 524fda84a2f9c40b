#include "cellflow/cache/table_store.hpp"

#include <fmt/format.h>

#include <cstring>

#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/wait_lock.hpp"

namespace cellflow {
namespace fs = std::filesystem;

TableStore::TableStore(std::shared_ptr<Env> env, std::string folder, std::string owner,
                       Durability durability)
    : env_(std::move(env)),
      folder_(std::move(folder)),
      owner_(std::move(owner)),
      lock_file_(join_path(folder_, layout::kCellLock)),
      durability_(durability) {}

TableStore::TableStore(const fs::path& path)
    : TableStore(posix_env(path.parent_path()), path.filename().string(),
                 path.parent_path().filename().string()) {}

fs::path TableStore::path() const { return env_->root() / folder_; }

fs::path TableStore::cell_path(const CellIndex& cell) const {
  return env_->root() / layout::cell(folder_, cell);
}

std::optional<CellBuffer> TableStore::read(const CellIndex& cell) {
  const std::string file = layout::cell(folder_, cell);
  auto stored = env_->read(file);
  if (!stored) return std::nullopt;
  const std::string bytes = ZarrArray::decode_chunk_any(*stored, "file " + env_->describe(file),
                                                        layout::cell_identity(owner_, cell));
  CellBuffer out = CellBuffer::allocate(DType::kU8, Shape{static_cast<int64_t>(bytes.size())});
  if (!bytes.empty()) std::memcpy(out.mutable_data(), bytes.data(), bytes.size());
  return out;
}

void TableStore::write(const CellIndex& cell, const CellBuffer& buffer) {
  env_->write_atomic(layout::cell(folder_, cell),
                     ZarrArray::encode_chunk(buffer.data(), buffer.num_bytes(), 1,
                                             layout::cell_identity(owner_, cell)),
                     durability_);
}

bool TableStore::contains(const CellIndex& cell) {
  return env_->stat(layout::cell(folder_, cell)).kind == EntryKind::kFile;
}

void TableStore::remove(const CellIndex& cell) { env_->remove(layout::cell(folder_, cell)); }

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
  // Bounded by the thread's ScopedWaitLimit (a run's --timeout).
  return wait_lock(*env_, lock_file_, lock_byte(cell), LockMode::kExclusive, std::nullopt,
                   fmt::format("cell {} of {}", cell.str(), folder_));
}

bool TableStore::locked_elsewhere(const CellIndex& cell) {
  return env_->locked_elsewhere(lock_file_, lock_byte(cell), LockMode::kExclusive);
}

}  // namespace cellflow
