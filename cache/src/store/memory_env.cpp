#include "cellflow/store/memory_env.hpp"

#include <fmt/format.h>

#include <condition_variable>
#include <functional>

namespace cellflow {
namespace {

struct Entry {
  EntryKind kind = EntryKind::kFolder;
  std::string data;
  bool synced = false;  // the data survives a power cut
  std::filesystem::file_time_type mtime{};
};

std::string parent_of(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string() : std::string(path.substr(0, slash));
}

std::string name_of(std::string_view path) {
  const size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

}  // namespace

struct MemoryEnv::Impl {
  mutable std::mutex mu;
  std::map<std::string, Entry> entries;  // "" (the root) is implicit
  std::map<int64_t, Fault> faults;
  int64_t steps = 0;
  bool crashed = false;
  uint64_t temp_counter = 0;

  // Locks: holders per (path, byte).
  struct LockState {
    int shared = 0;
    bool exclusive = false;
  };
  std::map<std::pair<std::string, int64_t>, LockState> locks;
  std::condition_variable lock_cv;
  uint64_t lock_generation = 0;  // bumped by restart()

  const Entry* find(const std::string& path) const {
    auto it = entries.find(path);
    return it == entries.end() ? nullptr : &it->second;
  }

  // The kind of what blocks `path`'s parents: kFolder when every parent is a
  // folder (or missing: then `missing` is set).
  EntryKind parents(std::string_view path, bool& missing, std::string& where) const {
    missing = false;
    size_t pos = 0;
    while ((pos = path.find('/', pos)) != std::string_view::npos) {
      const std::string p(path.substr(0, pos));
      const Entry* e = find(p);
      if (e == nullptr) {
        missing = true;
        return EntryKind::kFolder;
      }
      if (e->kind != EntryKind::kFolder) {
        where = p;
        return e->kind;
      }
      ++pos;
    }
    return EntryKind::kFolder;
  }
};

MemoryEnv::MemoryEnv(std::filesystem::path root)
    : root_(std::move(root)), impl_(std::make_unique<Impl>()) {}

MemoryEnv::~MemoryEnv() = default;

namespace {

CorruptionError damage(const Env& env, std::string_view path, EntryKind found,
                       std::string_view expected) {
  return CorruptionError(
      fmt::format("file {}: {} is where the cache expects {} (damage: never followed or read; "
                  "`cellflow cache verify --repair` removes it)",
                  env.describe(path), entry_kind_name(found), expected));
}

}  // namespace

namespace {

// Counts one numbered step of a mutation and throws the fault injected
// there (a crash freezes the store). Returns true for a silently short write.
// REQUIRES: impl.mu held.
bool step(MemoryEnv::Impl& impl, const Env& env, std::string_view path,
          const std::function<void()>& undo) {
  if (impl.crashed) throw SimulatedCrash();
  const int64_t n = impl.steps++;
  auto it = impl.faults.find(n);
  if (it == impl.faults.end()) return false;
  const MemoryEnv::Fault fault = it->second;
  impl.faults.erase(it);
  switch (fault) {
    case MemoryEnv::Fault::kCrash:
      impl.crashed = true;
      throw SimulatedCrash();
    case MemoryEnv::Fault::kShortWrite:
      return true;
    case MemoryEnv::Fault::kNoSpace:
    case MemoryEnv::Fault::kIoError:
      break;
  }
  undo();
  throw IoError(fmt::format(
      "file {}: cannot write: {}", env.describe(path),
      fault == MemoryEnv::Fault::kNoSpace ? "No space left on device" : "Input/output error"));
}

}  // namespace

EntryInfo MemoryEnv::stat(std::string_view path) {
  std::lock_guard lock(impl_->mu);
  EntryInfo info;
  if (path.empty()) {
    info.kind = EntryKind::kFolder;
    return info;
  }
  bool missing = false;
  std::string where;
  if (impl_->parents(path, missing, where) != EntryKind::kFolder || missing) return info;
  const Entry* e = impl_->find(std::string(path));
  if (e == nullptr) return info;
  info.kind = e->kind;
  info.size = e->data.size();
  info.allocated = e->data.size();
  info.mtime = e->mtime;
  return info;
}

std::optional<std::string> MemoryEnv::read(std::string_view path) {
  std::lock_guard lock(impl_->mu);
  if (impl_->crashed) throw SimulatedCrash();
  bool missing = false;
  std::string where;
  const EntryKind k = impl_->parents(path, missing, where);
  if (k != EntryKind::kFolder) throw damage(*this, where, k, "a folder");
  if (missing) return std::nullopt;
  const Entry* e = impl_->find(std::string(path));
  if (e == nullptr) return std::nullopt;
  if (e->kind != EntryKind::kFile) throw damage(*this, path, e->kind, "a file");
  return e->data;
}

void MemoryEnv::make_folders(std::string_view path) {
  std::lock_guard lock(impl_->mu);
  const auto cleanup = [] {};
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    const std::string p(path.substr(0, end));
    const Entry* e = impl_->find(p);
    if (e == nullptr) {
      step(*impl_, *this, p, cleanup);
      Entry folder;
      folder.kind = EntryKind::kFolder;
      folder.synced = true;
      folder.mtime = std::filesystem::file_time_type::clock::now();
      impl_->entries[p] = folder;
    } else if (e->kind != EntryKind::kFolder) {
      throw damage(*this, p, e->kind, "a folder");
    }
    pos = end + 1;
  }
}

void MemoryEnv::write_atomic(std::string_view path, std::string_view data, Durability durability) {
  commit(path, data, durability, false);
}

bool MemoryEnv::write_new(std::string_view path, std::string_view data, Durability durability) {
  return commit(path, data, durability, true);
}

bool MemoryEnv::commit(std::string_view path, std::string_view data, Durability durability,
                       bool only_if_new) {
  const std::string parent = parent_of(path);
  if (!parent.empty()) make_folders(parent);
  std::lock_guard lock(impl_->mu);
  const std::string tmp =
      join_path(parent, fmt::format(".{}.tmp.0.{}.0", name_of(path), impl_->temp_counter++));
  const auto cleanup = [&] { impl_->entries.erase(tmp); };
  bool short_write = step(*impl_, *this, path, cleanup);  // create the temporary file
  Entry file;
  file.kind = EntryKind::kFile;
  file.mtime = std::filesystem::file_time_type::clock::now();
  impl_->entries[tmp] = file;
  short_write = step(*impl_, *this, path, cleanup) || short_write;  // write
  impl_->entries[tmp].data = std::string(short_write ? data.substr(0, data.size() / 2) : data);
  if (durability == Durability::kPowerCut) {
    step(*impl_, *this, path, cleanup);  // sync
    impl_->entries[tmp].synced = true;
  }
  {
    const Entry* existing = impl_->find(std::string(path));
    if (existing != nullptr && existing->kind == EntryKind::kFolder) {
      cleanup();
      throw damage(*this, path, EntryKind::kFolder, "a file");
    }
    // A no-replace rename finds the place taken: nothing is committed (checked
    // under the same lock as the rename, like renameat2(RENAME_NOREPLACE)).
    if (existing != nullptr && only_if_new) {
      cleanup();
      return false;
    }
  }
  step(*impl_, *this, path, cleanup);  // rename
  impl_->entries[std::string(path)] = impl_->entries[tmp];
  impl_->entries.erase(tmp);
  if (durability == Durability::kPowerCut) {
    step(*impl_, *this, path, [] {});  // sync the folder
  }
  return true;
}

void MemoryEnv::rename(std::string_view from, std::string_view to) {
  const std::string parent = parent_of(to);
  if (!parent.empty()) make_folders(parent);
  std::lock_guard lock(impl_->mu);
  const auto cleanup = [] {};
  const std::string f(from);
  if (impl_->find(f) == nullptr)
    throw IoError(fmt::format("file {}: cannot rename: No such file or directory", describe(from)));
  step(*impl_, *this, from, cleanup);
  const std::string t(to);
  std::map<std::string, Entry> moved;
  for (auto it = impl_->entries.begin(); it != impl_->entries.end();) {
    if (it->first == f || (it->first.size() > f.size() && it->first.compare(0, f.size(), f) == 0 &&
                           it->first[f.size()] == '/')) {
      moved[t + it->first.substr(f.size())] = std::move(it->second);
      it = impl_->entries.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [k, v] : moved) impl_->entries[k] = std::move(v);
}

std::vector<DirEntry> MemoryEnv::list(std::string_view path) {
  std::lock_guard lock(impl_->mu);
  if (impl_->crashed) throw SimulatedCrash();
  std::vector<DirEntry> out;
  const std::string p(path);
  if (!p.empty()) {
    const Entry* e = impl_->find(p);
    if (e == nullptr) return out;
    if (e->kind != EntryKind::kFolder) throw damage(*this, path, e->kind, "a folder");
  }
  const std::string prefix = p.empty() ? std::string() : p + "/";
  for (auto it = impl_->entries.lower_bound(prefix); it != impl_->entries.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    const std::string rest = it->first.substr(prefix.size());
    if (rest.empty() || rest.find('/') != std::string::npos) continue;
    out.push_back(DirEntry{rest, it->second.kind});
  }
  return out;
}

bool MemoryEnv::remove(std::string_view path) {
  std::lock_guard lock(impl_->mu);
  const auto cleanup = [] {};
  const std::string p(path);
  if (impl_->find(p) == nullptr) return false;
  step(*impl_, *this, path, cleanup);
  for (auto it = impl_->entries.begin(); it != impl_->entries.end();) {
    if (it->first == p || (it->first.size() > p.size() && it->first.compare(0, p.size(), p) == 0 &&
                           it->first[p.size()] == '/'))
      it = impl_->entries.erase(it);
    else
      ++it;
  }
  return true;
}

void MemoryEnv::touch(std::string_view path) {
  std::lock_guard lock(impl_->mu);
  if (impl_->crashed) throw SimulatedCrash();
  auto it = impl_->entries.find(std::string(path));
  if (it != impl_->entries.end()) it->second.mtime = std::filesystem::file_time_type::clock::now();
}

void MemoryEnv::sync_folder(std::string_view path) {
  std::lock_guard lock(impl_->mu);
  const auto cleanup = [] {};
  step(*impl_, *this, path, cleanup);
}

namespace {

class MemoryLock final : public EnvLock {
 public:
  explicit MemoryLock(std::function<void()> release) : release_(std::move(release)) {}
  ~MemoryLock() override { release_(); }

 private:
  std::function<void()> release_;
};

}  // namespace

std::unique_ptr<EnvLock> MemoryEnv::lock(std::string_view path, int64_t offset, LockMode mode,
                                         std::optional<std::chrono::milliseconds> timeout) {
  std::unique_lock lock(impl_->mu);
  if (impl_->crashed) throw SimulatedCrash();
  const auto key = std::make_pair(std::string(path), offset);
  const auto free_for = [&] {
    const Impl::LockState& s = impl_->locks[key];
    return mode == LockMode::kShared ? !s.exclusive : (!s.exclusive && s.shared == 0);
  };
  if (!timeout) {
    impl_->lock_cv.wait(lock, free_for);
  } else if (!impl_->lock_cv.wait_for(lock, *timeout, free_for)) {
    return nullptr;
  }
  Impl::LockState& s = impl_->locks[key];
  if (mode == LockMode::kShared)
    ++s.shared;
  else
    s.exclusive = true;
  Impl* impl = impl_.get();
  const uint64_t generation = impl_->lock_generation;
  return std::make_unique<MemoryLock>([impl, key, mode, generation] {
    {
      std::lock_guard l(impl->mu);
      // Taken before a restart(): the "dead process's" lock is gone already.
      if (impl->lock_generation != generation) return;
      Impl::LockState& st = impl->locks[key];
      if (mode == LockMode::kShared)
        --st.shared;
      else
        st.exclusive = false;
    }
    impl->lock_cv.notify_all();
  });
}

bool MemoryEnv::locked_elsewhere(std::string_view path, int64_t offset, LockMode mode) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->locks.find(std::make_pair(std::string(path), offset));
  if (it == impl_->locks.end()) return false;
  return mode == LockMode::kShared ? it->second.exclusive
                                   : (it->second.exclusive || it->second.shared > 0);
}

void MemoryEnv::inject(int64_t step, Fault fault) {
  std::lock_guard lock(impl_->mu);
  impl_->faults[impl_->steps + step] = fault;
}

int64_t MemoryEnv::steps() const {
  std::lock_guard lock(impl_->mu);
  return impl_->steps;
}

void MemoryEnv::reset_steps() {
  std::lock_guard lock(impl_->mu);
  impl_->steps = 0;
  impl_->faults.clear();
}

bool MemoryEnv::crashed() const {
  std::lock_guard lock(impl_->mu);
  return impl_->crashed;
}

void MemoryEnv::restart(bool power_cut) {
  std::lock_guard lock(impl_->mu);
  impl_->crashed = false;
  impl_->faults.clear();
  impl_->locks.clear();  // a dead process's locks are released by the kernel
  ++impl_->lock_generation;
  if (power_cut)
    for (auto& [path, e] : impl_->entries)
      if (e.kind == EntryKind::kFile && !e.synced) e.data.clear();
}

void MemoryEnv::plant(std::string_view path, EntryKind kind, std::string data) {
  std::lock_guard lock(impl_->mu);
  size_t pos = 0;
  while ((pos = path.find('/', pos)) != std::string_view::npos) {
    const std::string p(path.substr(0, pos));
    if (impl_->find(p) == nullptr) impl_->entries[p] = Entry{EntryKind::kFolder, {}, true, {}};
    ++pos;
  }
  const std::string p(path);
  for (auto it = impl_->entries.begin(); it != impl_->entries.end();) {
    if (it->first.size() > p.size() && it->first.compare(0, p.size(), p) == 0 &&
        it->first[p.size()] == '/')
      it = impl_->entries.erase(it);
    else
      ++it;
  }
  impl_->entries[p] =
      Entry{kind, std::move(data), true, std::filesystem::file_time_type::clock::now()};
}

std::map<std::string, std::pair<EntryKind, std::string>> MemoryEnv::snapshot() const {
  std::lock_guard lock(impl_->mu);
  std::map<std::string, std::pair<EntryKind, std::string>> out;
  for (const auto& [path, e] : impl_->entries) out[path] = {e.kind, e.data};
  return out;
}

}  // namespace cellflow
