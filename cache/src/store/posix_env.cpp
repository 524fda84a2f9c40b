// The POSIX Env: every path is resolved beneath the root's descriptor with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) (or, where the kernel lacks
// it, one openat(O_NOFOLLOW) per component), and only regular files and
// folders are opened: what else is found is damage, reported by name.
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <system_error>
#include <thread>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {
namespace fs = std::filesystem;

const char* entry_kind_name(EntryKind kind) {
  switch (kind) {
    case EntryKind::kMissing:
      return "nothing";
    case EntryKind::kFile:
      return "a file";
    case EntryKind::kFolder:
      return "a folder";
    case EntryKind::kSymlink:
      return "a symbolic link";
    case EntryKind::kOther:
      return "a FIFO, socket or device";
  }
  return "?";
}

std::string Env::describe(std::string_view path) const {
  if (path.empty()) return root().string();
  return (root() / fs::path(path)).string();
}

std::optional<std::string> Env::read_tail(std::string_view path, size_t bytes) {
  auto out = read(path);
  if (out && out->size() > bytes) out->erase(0, out->size() - bytes);
  return out;
}

std::string join_path(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  std::string out(a);
  out += '/';
  out += b;
  return out;
}

namespace {

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  int release() {
    const int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_ = -1;
};

EntryKind kind_of(mode_t mode) {
  if (S_ISREG(mode)) return EntryKind::kFile;
  if (S_ISDIR(mode)) return EntryKind::kFolder;
  if (S_ISLNK(mode)) return EntryKind::kSymlink;
  return EntryKind::kOther;
}

std::pair<std::string_view, std::string_view> split_parent(std::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return {std::string_view(), path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

void check_relative(std::string_view path) {
  if (!path.empty() && path.front() == '/')
    throw InvalidArgument(fmt::format("store path \"{}\" is not relative", path));
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view part = path.substr(start, end - start);
    if (part == "." || part == ".." || (part.empty() && !path.empty()))
      throw InvalidArgument(fmt::format(R"(store path "{}" has a "{}" component)", path, part));
    start = end + 1;
  }
}

std::string temp_suffix() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format(".tmp.{}.{}.{:x}", ::getpid(), counter.fetch_add(1), rng() & 0xffffff);
}

class PosixLock final : public EnvLock {
 public:
  PosixLock(Fd fd, int64_t offset) : fd_(std::move(fd)), offset_(offset) {}
  ~PosixLock() override {
    if (!fd_.ok()) return;
    struct flock fl {};
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = static_cast<off_t>(offset_);
    fl.l_len = 1;
    ::fcntl(fd_.get(), F_OFD_SETLK, &fl);
  }

 private:
  Fd fd_;
  int64_t offset_;
};

// Holds nothing: the lock file could not be created (read-only cache).
class NoLock final : public EnvLock {};

class PosixEnv final : public Env {
 public:
  explicit PosixEnv(fs::path root) : root_(std::move(root)) {
    std::error_code ec;
    fs::create_directories(root_, ec);
    if (ec)
      throw IoError(fmt::format("cache {}: cannot create it: {}", root_.string(), ec.message()));
    root_fd_ = Fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd_.ok())
      throw IoError(fmt::format("cache {}: cannot open it: {}", root_.string(),
                                std::error_code(errno, std::generic_category()).message()));
  }

  const fs::path& root() const override { return root_; }

  EntryInfo stat(std::string_view path) override {
    check_relative(path);
    EntryInfo info;
    if (path.empty()) {
      info.kind = EntryKind::kFolder;
      return info;
    }
    struct stat st {};
    // Asked for every cell a run plans: one openat2() where the kernel can
    // (a link at the end is opened as itself, O_PATH | O_NOFOLLOW), so that a
    // missing cell costs one call; else the folder, then the entry in it.
    Fd fd;
    if (open_file_beneath(path, O_PATH | O_NOFOLLOW | O_CLOEXEC, fd)) {
      if (!fd.ok()) return info;
      if (::fstat(fd.get(), &st) != 0) throw io_error(path, "inspect", errno);
    } else {
      const auto [dir, name] = split_parent(path);
      Fd parent = open_folder(dir, false);
      if (!parent.ok()) return info;
      if (::fstatat(parent.get(), std::string(name).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) return info;
        throw io_error(path, "inspect", errno);
      }
    }
    info.kind = kind_of(st.st_mode);
    info.size = static_cast<uint64_t>(st.st_size);
    info.allocated = static_cast<uint64_t>(st.st_blocks) * 512;
    const auto since_epoch =
        std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec);
    info.mtime = fs::file_time_type::clock::from_sys(std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(since_epoch)));
    return info;
  }

  std::optional<std::string> read(std::string_view path) override {
    return read_from(path, std::nullopt);
  }

  std::optional<std::string> read_tail(std::string_view path, size_t bytes) override {
    return read_from(path, bytes);
  }

  // The whole file, or its last `tail` bytes.
  std::optional<std::string> read_from(std::string_view path, std::optional<size_t> tail) {
    check_relative(path);
    constexpr int kFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    struct stat st {};
    // A look first, in one openat2() where the kernel can (a missing cell:
    // one call): O_PATH opens nothing, so only a regular file is opened to be
    // read. A link, or anything the kernel will not say, takes the walk,
    // which names it.
    Fd fd;
    Fd look;
    if (open_file_beneath(path, O_PATH | O_NOFOLLOW | O_CLOEXEC, look)) {
      if (!look.ok()) return std::nullopt;
      if (::fstat(look.get(), &st) != 0) throw io_error(path, "inspect", errno);
      if (!S_ISREG(st.st_mode)) throw damage(path, kind_of(st.st_mode), "a file");
      if (!open_file_beneath(path, kFlags, fd)) fd = Fd();  // (not expected: it just resolved)
      if (!fd.ok() && errno != ENOENT) throw io_error(path, "open", errno);
    } else {
      const auto [dir, name] = split_parent(path);
      Fd parent = open_folder(dir, false);
      if (!parent.ok()) return std::nullopt;
      const std::string n(name);
      if (::fstatat(parent.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
        throw io_error(path, "inspect", errno);
      }
      if (!S_ISREG(st.st_mode)) throw damage(path, kind_of(st.st_mode), "a file");
      fd = Fd(::openat(parent.get(), n.c_str(), kFlags));
      if (!fd.ok()) {
        if (errno == ENOENT) return std::nullopt;
        if (errno == ELOOP) throw damage(path, EntryKind::kSymlink, "a file");
        throw io_error(path, "open", errno);
      }
    }
    if (!fd.ok()) return std::nullopt;
    if (::fstat(fd.get(), &st) != 0) throw io_error(path, "inspect", errno);
    if (!S_ISREG(st.st_mode)) throw damage(path, kind_of(st.st_mode), "a file");
    std::string out;
    auto size = static_cast<size_t>(st.st_size);
    if (tail && *tail < size) {
      if (::lseek(fd.get(), static_cast<off_t>(size - *tail), SEEK_SET) < 0)
        throw io_error(path, "seek in", errno);
      size = *tail;
    }
    if (const int err = read_to_end(fd.get(), out, size)) throw io_error(path, "read", err);
    return out;
  }

  void write_atomic(std::string_view path, std::string_view data, Durability durability) override {
    commit(path, data, durability, false);
  }

  bool write_new(std::string_view path, std::string_view data, Durability durability) override {
    return commit(path, data, durability, true);
  }

  void make_folders(std::string_view path) override {
    check_relative(path);
    open_folder(path, true);
  }

  void rename(std::string_view from, std::string_view to) override {
    check_relative(from);
    check_relative(to);
    const auto [fdir, fname] = split_parent(from);
    const auto [tdir, tname] = split_parent(to);
    Fd fparent = open_folder(fdir, false);
    if (!fparent.ok()) throw io_error(from, "rename", ENOENT);
    Fd tparent = open_folder(tdir, true);
    if (::renameat(fparent.get(), std::string(fname).c_str(), tparent.get(),
                   std::string(tname).c_str()) != 0)
      throw io_error(from, fmt::format("rename to {}", describe(to)), errno);
  }

  std::vector<DirEntry> list(std::string_view path) override {
    check_relative(path);
    std::vector<DirEntry> out;
    Fd folder = open_folder(path, false);
    if (!folder.ok()) return out;
    return list_fd(std::move(folder), path);
  }

  bool remove(std::string_view path) override {
    check_relative(path);
    if (path.empty()) throw InvalidArgument("the store's root cannot be removed");
    const auto [dir, name] = split_parent(path);
    Fd parent = open_folder(dir, false);
    if (!parent.ok()) return false;
    return remove_at(parent.get(), std::string(name), path);
  }

  void touch(std::string_view path) override {
    check_relative(path);
    const auto [dir, name] = split_parent(path);
    Fd parent = open_folder(dir, false);
    if (parent.ok())
      ::utimensat(parent.get(), std::string(name).c_str(), nullptr, AT_SYMLINK_NOFOLLOW);
  }

  void sync_folder(std::string_view path) override {
    check_relative(path);
    Fd folder = open_folder(path, false);
    if (folder.ok() && ::fsync(folder.get()) != 0) throw io_error(path, "sync", errno);
  }

  std::unique_ptr<EnvLock> lock(std::string_view path, int64_t offset, LockMode mode,
                                std::optional<std::chrono::milliseconds> timeout) override {
    check_relative(path);
    const auto [dir, name] = split_parent(path);
    const std::string n(name);
    Fd fd;
    // The lock file usually exists: one openat2() where the kernel can.
    // Else (not there yet, or something in the way) it is made in its folder.
    open_file_beneath(path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, fd);
    // ENOENT: the folder was removed (renamed away) after it was opened; open
    // it again (a bounded number of times) rather than fail the lock.
    for (int attempt = 0; attempt < 100 && !fd.ok(); ++attempt) {
      Fd parent;
      try {
        // The folder usually exists: one resolution beneath the root instead
        // of a walk that opens (and would create) each component.
        parent = open_folder(dir, false);
        if (!parent.ok()) parent = open_folder(dir, true);
      } catch (const IoError&) {
        return std::make_unique<NoLock>();  // read-only cache: nothing to protect
      }
      fd = Fd(::openat(parent.get(), n.c_str(),
                       O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0644));
      if (!fd.ok() && errno != ENOENT) break;
    }
    if (!fd.ok()) {
      if (errno == EROFS || errno == EACCES || errno == EPERM) return std::make_unique<NoLock>();
      if (errno == ELOOP) throw damage(path, EntryKind::kSymlink, "a lock file");
      throw io_error(path, "open the lock file", errno);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw io_error(path, "inspect", errno);
    if (!S_ISREG(st.st_mode)) throw damage(path, kind_of(st.st_mode), "a lock file");
    struct flock fl {};
    fl.l_type = mode == LockMode::kShared ? F_RDLCK : F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = static_cast<off_t>(offset);
    fl.l_len = 1;
    if (!timeout) {
      int rc;
      do {
        rc = ::fcntl(fd.get(), F_OFD_SETLKW, &fl);
      } while (rc != 0 && errno == EINTR);
      if (rc != 0) {
        if (errno == ENOLCK || errno == EINVAL) return std::make_unique<NoLock>();
        throw io_error(path, "lock", errno);
      }
      return std::make_unique<PosixLock>(std::move(fd), offset);
    }
    const auto deadline = std::chrono::steady_clock::now() + *timeout;
    auto pause = std::chrono::microseconds(200);
    while (true) {
      if (::fcntl(fd.get(), F_OFD_SETLK, &fl) == 0)
        return std::make_unique<PosixLock>(std::move(fd), offset);
      if (errno != EAGAIN && errno != EACCES && errno != EINTR) {
        if (errno == ENOLCK || errno == EINVAL) return std::make_unique<NoLock>();
        throw io_error(path, "lock", errno);
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return nullptr;
      std::this_thread::sleep_for(
          std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
      pause = std::min(pause * 2, std::chrono::microseconds(20000));
    }
  }

  bool locked_elsewhere(std::string_view path, int64_t offset, LockMode mode) override {
    check_relative(path);
    constexpr int kFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    // Asked once per cell: the lock file in one resolution beneath the root
    // where the kernel can, else its folder first.
    Fd fd;
    if (!open_file_beneath(path, kFlags, fd)) {
      const auto [dir, name] = split_parent(path);
      Fd parent = open_folder(dir, false);
      if (!parent.ok()) return false;
      fd = Fd(::openat(parent.get(), std::string(name).c_str(), kFlags));
    }
    if (!fd.ok()) return false;
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
    struct flock fl {};
    fl.l_type = mode == LockMode::kShared ? F_RDLCK : F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = static_cast<off_t>(offset);
    fl.l_len = 1;
    if (::fcntl(fd.get(), F_OFD_GETLK, &fl) != 0) return false;
    return fl.l_type != F_UNLCK;
  }

 private:
  IoError io_error(std::string_view path, std::string_view action, int err) const {
    return IoError(fmt::format("file {}: cannot {}: {}", describe(path), action,
                               std::error_code(err, std::generic_category()).message()));
  }

  CorruptionError damage(std::string_view path, EntryKind found, std::string_view expected) const {
    return CorruptionError(
        fmt::format("file {}: {} is where the cache expects {} (damage: never followed or read; "
                    "`cellflow cache verify --repair` removes it)",
                    describe(path), entry_kind_name(found), expected));
  }

  // Opens the file `path` beneath the root in one openat2() (no link followed
  // anywhere on the way). Returns false when the kernel cannot say (no
  // openat2, or a link or non-folder on the way: the caller walks instead);
  // true with `out` open, or empty when nothing is there.
  bool open_file_beneath(std::string_view path, int flags, Fd& out) {
    if (!have_openat2_.load(std::memory_order_relaxed)) return false;
    struct open_how how {};
    how.flags = static_cast<uint64_t>(flags);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const std::string p(path);
    const long fd = ::syscall(SYS_openat2, root_fd_.get(), p.c_str(), &how, sizeof how);
    if (fd >= 0) {
      out = Fd(static_cast<int>(fd));
      return true;
    }
    if (errno == ENOENT) {
      out = Fd();
      return true;
    }
    if (errno == ENOSYS || errno == EPERM || errno == E2BIG)
      have_openat2_.store(false, std::memory_order_relaxed);
    return false;
  }

  // Opens the folder `path` beneath the root. Returns an empty Fd when it (or
  // a folder on the way) is missing and `create` is false. Throws
  // CorruptionError when something other than a folder is on the way.
  Fd open_folder(std::string_view path, bool create) {
    // A new open file description of the root, not a dup(): a dup shares the
    // directory offset, so a second list("") would start at the end (empty).
    if (path.empty()) return Fd(::openat(root_fd_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!create && have_openat2_.load(std::memory_order_relaxed)) {
      struct open_how how {};
      how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
      how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
      const std::string p(path);
      const long fd = ::syscall(SYS_openat2, root_fd_.get(), p.c_str(), &how, sizeof how);
      if (fd >= 0) return Fd(static_cast<int>(fd));
      if (errno == ENOENT) return Fd();
      if (errno == ENOSYS || errno == EPERM || errno == E2BIG) {
        have_openat2_.store(false, std::memory_order_relaxed);
      } else if (errno != ELOOP && errno != ENOTDIR && errno != EXDEV && errno != EAGAIN) {
        throw io_error(path, "open the folder", errno);
      }
      // Fall through: the walk below names what is in the way.
    }
    Fd cur(::dup(root_fd_.get()));
    size_t start = 0;
    while (start < path.size()) {
      size_t end = path.find('/', start);
      if (end == std::string_view::npos) end = path.size();
      const std::string part(path.substr(start, end - start));
      const std::string_view so_far = path.substr(0, end);
      Fd next(::openat(cur.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      // A folder created here may be removed (renamed away by maintenance)
      // before it is opened: create it again, a bounded number of times, so
      // that a caller asking for creation never gets no folder.
      for (int attempt = 0; !next.ok() && errno == ENOENT && create && attempt < 100; ++attempt) {
        if (::mkdirat(cur.get(), part.c_str(), 0755) != 0 && errno != EEXIST)
          throw io_error(so_far, "create the folder", errno);
        next =
            Fd(::openat(cur.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      }
      if (!next.ok()) {
        const int err = errno;
        if (err == ENOENT && create) throw io_error(so_far, "create the folder", err);
        if (err == ENOENT) return Fd();
        struct stat st {};
        if (::fstatat(cur.get(), part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            !S_ISDIR(st.st_mode))
          throw damage(so_far, kind_of(st.st_mode), "a folder");
        throw io_error(so_far, "open the folder", err);
      }
      cur = std::move(next);
      start = end + 1;
    }
    return cur;
  }

  std::vector<DirEntry> list_fd(Fd folder, std::string_view path) {
    std::vector<DirEntry> out;
    const int fd = folder.get();
    DIR* d = ::fdopendir(folder.release());
    if (d == nullptr) {
      ::close(fd);
      throw io_error(path, "list", errno);
    }
    while (true) {
      errno = 0;
      // Thread-safe here: this DIR stream is private to the call (glibc).
      const dirent* e = ::readdir(d);  // NOLINT(concurrency-mt-unsafe)
      if (e == nullptr) {
        const int err = errno;
        ::closedir(d);
        if (err != 0) throw io_error(path, "list", err);
        break;
      }
      const std::string_view name(e->d_name);
      if (name == "." || name == "..") continue;
      DirEntry entry;
      entry.name = std::string(name);
      switch (e->d_type) {
        case DT_REG:
          entry.kind = EntryKind::kFile;
          break;
        case DT_DIR:
          entry.kind = EntryKind::kFolder;
          break;
        case DT_LNK:
          entry.kind = EntryKind::kSymlink;
          break;
        case DT_UNKNOWN: {
          struct stat st {};
          entry.kind = ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
                           ? kind_of(st.st_mode)
                           : EntryKind::kMissing;
          break;
        }
        default:
          entry.kind = EntryKind::kOther;
      }
      if (entry.kind != EntryKind::kMissing) out.push_back(std::move(entry));
    }
    return out;
  }

  bool remove_at(int parent, const std::string& name, std::string_view path) {
    struct stat st {};
    if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return false;
      throw io_error(path, "inspect", errno);
    }
    if (S_ISDIR(st.st_mode)) {
      Fd folder(::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!folder.ok()) {
        if (errno == ENOENT) return false;
        throw io_error(path, "open the folder", errno);
      }
      const int fd = folder.get();
      Fd again(::dup(fd));
      for (const DirEntry& e : list_fd(std::move(again), path))
        remove_at(fd, e.name, join_path(path, e.name));
      if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
        throw io_error(path, "remove the folder", errno);
      return true;
    }
    if (::unlinkat(parent, name.c_str(), 0) != 0) {
      if (errno == ENOENT) return false;
      throw io_error(path, "remove", errno);
    }
    return true;
  }

  bool commit(std::string_view path, std::string_view data, Durability durability,
              bool only_if_new) {
    check_relative(path);
    const auto [dir, name] = split_parent(path);
    if (name.empty()) throw InvalidArgument("a store write needs a file name");
    Fd parent = open_folder(dir, false);
    if (!parent.ok()) parent = open_folder(dir, true);
    std::string tmp = ".";
    tmp += name;
    tmp += temp_suffix();
    Fd fd(::openat(parent.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                   0644));
    if (!fd.ok()) throw io_error(path, "create", errno);
    const auto fail = [&](const char* action, int err) {
      ::unlinkat(parent.get(), tmp.c_str(), 0);
      return io_error(path, action, err);
    };
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      const ssize_t n = ::write(fd.get(), p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw fail("write", errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    if (durability == Durability::kPowerCut && ::fdatasync(fd.get()) != 0)
      throw fail("write (sync)", errno);
    if (::close(fd.release()) != 0) throw fail("write", errno);
    const std::string final_name(name);
    if (only_if_new) {
      if (::renameat2(parent.get(), tmp.c_str(), parent.get(), final_name.c_str(),
                      RENAME_NOREPLACE) != 0) {
        const int err = errno;
        ::unlinkat(parent.get(), tmp.c_str(), 0);
        if (err == EEXIST) return false;
        throw io_error(path, "commit (rename)", err);
      }
    } else if (::renameat(parent.get(), tmp.c_str(), parent.get(), final_name.c_str()) != 0) {
      const int err = errno;
      ::unlinkat(parent.get(), tmp.c_str(), 0);
      if (err == EISDIR || err == ENOTEMPTY || err == EEXIST)
        throw damage(path, EntryKind::kFolder, "a file");
      throw io_error(path, "commit (rename)", err);
    }
    if (durability == Durability::kPowerCut && ::fsync(parent.get()) != 0)
      throw io_error(path, "sync its folder", errno);
    return true;
  }

  fs::path root_;
  Fd root_fd_;
  std::atomic<bool> have_openat2_{true};
};

}  // namespace

std::shared_ptr<Env> posix_env(const fs::path& root) { return std::make_shared<PosixEnv>(root); }

}  // namespace cellflow
