#include "cellflow/store/table_log.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {
namespace {

void check_name(const std::string& name, const char* what) {
  bool ok = !name.empty() && name.size() <= 200 && name.front() != '.';
  for (const char c : name)
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-' || c == '.');
  if (!ok)
    throw InvalidArgument(fmt::format(
        "{} \"{}\": use letters, digits, '_', '-' and '.' (not first), 1-200 characters", what,
        name));
}

// Sorts by time of the append, then makes it unique across processes.
std::string fresh_batch_id() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  return fmt::format("{:020d}-{}-{}-{:06x}", ns, ::getpid(), counter.fetch_add(1),
                     rng() & 0xffffff);
}

}  // namespace

TableLog::TableLog(const std::filesystem::path& cache_root, std::string name)
    : TableLog(posix_env(cache_root), std::move(name)) {}

TableLog::TableLog(std::shared_ptr<Env> env, std::string name)
    : env_(CacheDirectory(std::move(env)).env()), name_(std::move(name)) {
  check_name(name_, "table");
  folder_ = join_path(layout::kTables, name_);
}

bool TableLog::append(const Table& rows, const std::string& batch_id) {
  const std::string id = batch_id.empty() ? fresh_batch_id() : batch_id;
  check_name(id, "batch");
  const std::string bytes = rows.serialize();
  const std::string path = layout::table_batch(name_, id);
  return env_->write_new(path, ZarrArray::encode_chunk(bytes.data(), bytes.size(), 1, path),
                         Durability::kProcess);
}

Table TableLog::read() const {
  std::vector<std::string> ids;
  for (const DirEntry& e : env_->list(folder_))
    if (!layout::is_temp_name(e.name) && e.name.front() != '.') ids.push_back(e.name);
  std::sort(ids.begin(), ids.end());
  Table out;
  for (const std::string& id : ids) {
    const std::string path = layout::table_batch(name_, id);
    const auto stored = env_->read(path);
    if (!stored) continue;  // removed meanwhile
    const std::string what = "file " + env_->describe(path);
    const Table batch = Table::deserialize(ZarrArray::decode_chunk_any(*stored, what, path), what);
    if (out.num_columns() != 0 && batch.num_rows() > 0 && batch.columns() != out.columns())
      throw CorruptionError(fmt::format("{}: its columns differ from the table's", what));
    out.append(batch);
  }
  return out;
}

size_t TableLog::batches() const {
  size_t n = 0;
  for (const DirEntry& e : env_->list(folder_))
    if (e.kind == EntryKind::kFile && !layout::is_temp_name(e.name) && e.name.front() != '.') ++n;
  return n;
}

}  // namespace cellflow
