#include "cellflow/cache/metadata_lock.hpp"

#include <fmt/format.h>

#include <memory>
#include <string>
#include <unordered_map>

#include "cellflow/cache/error.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/wait_lock.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

// What this thread holds, for re-entrancy: the lock itself belongs to the
// outermost MetadataLock of the thread and is released with it. Other threads
// and processes are excluded by the Env lock alone.
struct Held {
  MetadataLock::Mode mode;
  int depth = 0;
  std::shared_ptr<Env> env;  // outlives `lock`
  std::unique_ptr<EnvLock> lock;
};
thread_local std::unordered_map<std::string, Held> t_held;

fs::path canonical_folder(const fs::path& folder) {
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(fs::absolute(folder), ec);
  if (ec) canonical = fs::absolute(folder).lexically_normal();
  if (!canonical.has_filename() && canonical.has_parent_path())
    canonical = canonical.parent_path();  // "dir/" and "dir/." name "dir"
  return canonical;
}

LockMode env_mode(MetadataLock::Mode mode) {
  return mode == MetadataLock::Mode::kShared ? LockMode::kShared : LockMode::kExclusive;
}

}  // namespace

fs::path MetadataLock::lock_path(const fs::path& folder) {
  return folder / std::string(layout::kMetaLock);
}

MetadataLock::MetadataLock(std::shared_ptr<Env> env, std::string folder, Mode mode,
                           std::optional<std::chrono::milliseconds> timeout)
    : mode_(mode) {
  key_ = canonical_folder(folder.empty() ? env->root() : env->root() / folder).string();
  acquire(std::move(env), folder, timeout);
}

MetadataLock::MetadataLock(const fs::path& folder, Mode mode,
                           std::optional<std::chrono::milliseconds> timeout)
    : mode_(mode) {
  const fs::path canonical = canonical_folder(folder);
  key_ = canonical.string();
  // Re-entrant use must not open the folder again.
  if (auto it = t_held.find(key_); it != t_held.end() && it->second.depth > 0) {
    acquire(nullptr, "", timeout);
    return;
  }
  acquire(posix_env(canonical), "", timeout);
}

void MetadataLock::acquire(std::shared_ptr<Env> env, const std::string& folder,
                           std::optional<std::chrono::milliseconds> timeout) {
  if (auto it = t_held.find(key_); it != t_held.end() && it->second.depth > 0) {
    if (it->second.mode == Mode::kShared && mode_ == Mode::kExclusive)
      throw InvalidArgument(fmt::format(
          "folder {}: this thread holds the shared metadata lock and asks for the exclusive one "
          "(release it first)",
          key_));
    mode_ = it->second.mode;
    ++it->second.depth;
    return;
  }
  const std::string file =
      folder.empty() ? std::string(layout::kMetaLock) : join_path(folder, layout::kMetaLock);
  std::unique_ptr<EnvLock> lock =
      wait_lock(*env, file, 0, env_mode(mode_), timeout,
                fmt::format("the metadata of folder {}", env->describe(folder)));
  t_held[key_] = Held{mode_, 1, std::move(env), std::move(lock)};
}

MetadataLock::~MetadataLock() {
  auto it = t_held.find(key_);
  if (it == t_held.end()) return;  // REQUIRES violated: nothing this thread can release
  if (--it->second.depth > 0) return;
  Held held = std::move(it->second);
  t_held.erase(it);
  held.lock.reset();  // before the Env it came from
}

std::optional<Value> read_json_locked(const fs::path& path) {
  const fs::path folder = canonical_folder(path.parent_path());
  const std::shared_ptr<Env> env = posix_env(folder);
  const MetadataLock lock(env, "", MetadataLock::Mode::kShared);
  const std::string name = path.filename().string();
  auto text = env->read(name);
  if (!text) return std::nullopt;
  return parse_json(*text, path.string());
}

Value update_json_atomic(const fs::path& path, const std::function<void(Value&)>& fn) {
  const fs::path folder = canonical_folder(path.parent_path());
  const std::shared_ptr<Env> env = posix_env(folder);
  const MetadataLock lock(env, "", MetadataLock::Mode::kExclusive);
  const std::string name = path.filename().string();
  Value v = Value::object();
  if (auto text = env->read(name)) v = parse_json(*text, path.string());
  fn(v);
  env->write_atomic(name, to_json(v), Durability::kProcess);
  return v;
}

}  // namespace cellflow
