// Memo: memoizes calls of any function on disk, keyed by content (joblib's
// Memory, in C++). An entry is a folder <cache>/memo/<key>/ holding
//   entry.json   readable record: function id, version, the arguments (as JSON
//                when cereal's JSON archive can write them and they are small),
//                result description and checksum, creation time, duration;
//   result.bin   the result in cereal's portable binary archive, or
//   result/      a Zarr v2 array, when the result is a CellBuffer (an image);
//   artifacts/   whatever the function wrote through current_artifacts().
// key = XXH3-128 of the function id, its version, the result type, the ELF
// build-id of the loaded object holding the function's code (unless
// set_key_by_code(false); see code_address below for which object that is)
// and, per argument, its type and the XXH3-128 of its cereal portable binary
// encoding (canonical for a given type and value on little-endian hosts). Arguments
// wrapped in Memo::ignore() (or listed by position in wrap()) are passed to
// the function but do not enter the key.
// Every file goes through the cache's Env (store/env.hpp; names in
// store/layout.hpp). An entry is written to <cache>/memo/.tmp/ and renamed
// into place: a crash leaves no entry. Thread-safe and process-safe:
// concurrent calls with one key compute once (threads of a process wait for
// one leader; processes serialize on the key's lock, MemoKeyLock's file
// <cache>/memo/<key>.lock, and the loser loads the winner's entry). Loading an
// entry holds that lock shared, and `cellflow cache gc` / `verify --repair`
// remove an entry only under it exclusively; a call served from an entry
// touches its entry.json (the entry's last use, for gc). Waiting blocks the
// calling thread, at most lock_timeout() (then LockTimeout).
#pragma once

#include <algorithm>
#include <atomic>
#include <cereal/archives/json.hpp>
#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/vector.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <istream>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <sstream>
#include <streambuf>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/cereal_types.hpp"
#include "cellflow/cache/code_identity.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

class CacheDirectory;
template <class R>
class MemoHandle;

/// An argument passed to the function but kept out of the key (see Memo::ignore).
template <class T>
struct MemoIgnored {
  using type = T;
  T value;
};

/// How one call was served.
struct MemoOutcome {
  bool cached = false;          // loaded from an existing entry (not computed)
  std::string key;              // 32 lowercase hex chars
  std::filesystem::path entry;  // <cache>/memo/<key>
  double seconds = 0;           // the whole call: hashing arguments, then compute + store, or load
};

template <class R>
struct MemoResult {
  R value;
  MemoOutcome outcome;
};

/// What a validation callback (Memo::set_validator) sees of a stored entry.
struct MemoEntryInfo {
  std::string function;
  int version = 0;
  std::string key;
  std::filesystem::path entry;                    // <cache>/memo/<key>
  std::chrono::system_clock::time_point created;  // when it was stored (whole seconds, UTC)
  double age_seconds = 0;                         // now - created
  double compute_seconds = 0;                     // how long the function ran then
};

/// Returns false to reject an entry: the call computes anew and replaces it.
using MemoValidator = std::function<bool(const MemoEntryInfo&)>;

struct MemoStats {
  int64_t hits = 0;    // calls served from an entry
  int64_t misses = 0;  // calls that computed and stored
};

namespace detail {

/// Arguments whose encoding is larger than this are recorded in entry.json by
/// type, size and hash only.
inline constexpr uint64_t kMemoJsonLimit = 4096;

/// A write-only stream buffer that hashes (XXH3-128) and counts what it gets.
class HashingStreamBuf : public std::streambuf {
 public:
  HashingStreamBuf();
  ~HashingStreamBuf() override;
  HashingStreamBuf(const HashingStreamBuf&) = delete;
  HashingStreamBuf& operator=(const HashingStreamBuf&) = delete;
  /// 32 hex chars of everything written so far.
  std::string hex_digest();
  uint64_t size();

 protected:
  int_type overflow(int_type c) override;
  std::streamsize xsputn(const char* s, std::streamsize n) override;

 private:
  void flush_buffer();
  void* state_;  // XXH3_state_t
  uint64_t size_ = 0;
  char buffer_[8192];
};

/// A read-only stream buffer over bytes owned elsewhere.
class MemoryStreamBuf : public std::streambuf {
 public:
  explicit MemoryStreamBuf(std::string_view bytes) {
    char* p = const_cast<char*>(bytes.data());
    setg(p, p, p + bytes.size());
  }
};

struct MemoArgument {
  std::string type;  // mangled type name (enters the key)
  bool ignored = false;
  std::string hash;  // XXH3-128 of the portable binary encoding
  uint64_t bytes = 0;
  std::string json;  // {"v": value} from cereal's JSON archive, or empty
};

struct MemoCall {
  std::string function;
  int version = 0;
  std::string result_type;  // mangled
  std::string code;         // build-id of the object holding the function; empty: not in the key
  std::string library;      // that object's path (recorded, not keyed)
  std::vector<MemoArgument> arguments;
};

std::string demangle(const char* mangled);
/// The bytes of a result.bin, checked against its entry.json's checksum.
class BlobBytes {
 public:
  explicit BlobBytes(std::string bytes) : bytes_(std::move(bytes)) {}
  std::string_view bytes() const { return bytes_; }

 private:
  std::string bytes_;
};
/// Reads entry folder `entry`'s result.bin and checks it against entry.json's
/// checksum. Throws CorruptionError naming the file.
std::unique_ptr<BlobBytes> read_blob_result(Env& env, const std::string& entry);
/// The same for the entry at a path.
std::unique_ptr<BlobBytes> read_blob_result(const std::filesystem::path& entry);
/// Writes `bytes` as folder `dir`'s result.bin; returns its description
/// {"format": "cereal-portable-binary", "file": "result.bin", "bytes", "xxh3"}.
Value store_blob_result(Env& env, const std::string& dir, std::string_view bytes);
/// The bytes cereal's portable binary archive writes for `write`.
std::string portable_bytes(const std::function<void(std::ostream&)>& write);
/// Stores an image as the Zarr v2 array "result" of folder `dir`; returns its description.
Value save_image_result(const std::shared_ptr<Env>& env, const std::string& dir,
                        const CellBuffer& image);
/// True if entry folder `entry` stores its result as a Zarr array ("result/").
bool has_image_result(Env& env, const std::string& entry);
/// The image stored in entry folder `entry`. Throws CorruptionError if the
/// array is missing, damaged or incomplete.
CellBuffer load_image_result(const std::shared_ptr<Env>& env, const std::string& entry);

/// The build-id and path of the loaded object whose code contains `address`,
/// looked up once per address; an empty build-id when none is known.
CodeIdentity code_identity_for_memo(const void* address);

/// An address inside the object that instantiates it for Fn (for a lambda,
/// the object whose source defines the lambda: its type has internal linkage).
template <class Fn>
void code_anchor() {}

/// Where a memoized function's code is: a function's own address, else (a
/// lambda or function object) that of code_anchor<Fn>.
template <class Fn>
const void* code_address(const Fn& fn) {
  using D = std::remove_cvref_t<Fn>;
  void (*anchor)() = nullptr;
  const void* address = nullptr;
  if constexpr (std::is_function_v<D>) {
    const D* f = &fn;
    static_assert(sizeof f == sizeof address);
    std::memcpy(&address, &f, sizeof address);
  } else if constexpr (std::is_pointer_v<D> && std::is_function_v<std::remove_pointer_t<D>>) {
    static_assert(sizeof fn == sizeof address);
    std::memcpy(&address, &fn, sizeof address);
  } else {
    anchor = &code_anchor<D>;
    static_assert(sizeof anchor == sizeof address);
    std::memcpy(&address, &anchor, sizeof address);
  }
  return address;
}

template <class T>
struct IsIgnored : std::false_type {};
template <class T>
struct IsIgnored<MemoIgnored<T>> : std::true_type {};

/// The value handed to the function: the argument itself, or what it ignores.
template <class A>
decltype(auto) unwrap(A&& a) {
  using D = std::remove_cvref_t<A>;
  if constexpr (IsIgnored<D>::value) {
    using T = typename D::type;
    if constexpr (std::is_lvalue_reference_v<T> || std::is_lvalue_reference_v<A>) {
      return static_cast<T&>(a.value);
    } else {
      return static_cast<T&&>(a.value);
    }
  } else {
    return std::forward<A>(a);
  }
}

template <class T>
std::string cereal_json(const T& value) {
  if constexpr (cereal::traits::is_output_serializable<T, cereal::JSONOutputArchive>::value) {
    try {
      std::ostringstream os;
      {
        cereal::JSONOutputArchive ar(os, cereal::JSONOutputArchive::Options::NoIndent());
        ar(cereal::make_nvp("v", value));
      }
      return os.str();
    } catch (const std::exception&) {
      return {};
    }
  } else {
    return {};
  }
}

template <class T>
MemoArgument describe_argument(const T& value) {
  static_assert(
      cereal::traits::is_output_serializable<T, cereal::PortableBinaryOutputArchive>::value,
      "a memoized argument must be serializable by cereal (or wrapped in Memo::ignore)");
  MemoArgument a;
  a.type = typeid(T).name();
  HashingStreamBuf buf;
  {
    std::ostream os(&buf);
    cereal::PortableBinaryOutputArchive ar(os);
    ar(value);
  }
  a.hash = buf.hex_digest();
  a.bytes = buf.size();
  if (a.bytes <= kMemoJsonLimit) a.json = cereal_json(value);
  return a;
}

}  // namespace detail

/// The key of a call description (exposed for tests and tools).
std::string memo_key(const detail::MemoCall& call);

class Memo {
 public:
  /// Entries live under `cache_root`/memo (created on the first store, which
  /// also writes `cache_root`/cellflow-cache.json if absent).
  explicit Memo(std::filesystem::path cache_root);
  explicit Memo(const CacheDirectory& cache);
  /// Entries live under memo/ of `env`.
  explicit Memo(std::shared_ptr<Env> env);

  /// <cache_root>/memo.
  const std::filesystem::path& root() const;
  MemoStats stats() const;

  /// How long a call waits for the key's lock (another process computing the
  /// same key, or maintenance removing its entry) before it throws
  /// LockTimeout; nullopt (the default): forever. Shared by copies.
  void set_lock_timeout(std::optional<std::chrono::milliseconds> timeout);
  std::optional<std::chrono::milliseconds> lock_timeout() const;

  /// Whether the code of the memoized function enters the key (default: yes):
  /// the ELF build-id of the executable or shared library holding it, so any
  /// rebuild of that object that changes its bytes computes anew, while a
  /// rebuild of identical code (deterministic builds) keeps the entries. Off:
  /// only `version` says the function changed (keys as before this setting).
  /// Shared by copies.
  void set_key_by_code(bool on);
  bool key_by_code() const;

  /// Logs every call through cellflow::log at `level` (joblib's verbose): the
  /// function, version and key, hit or miss, and the load or compute time.
  /// nullopt (the default): silent. Shared by copies.
  void set_log_level(std::optional<LogLevel> level);
  std::optional<LogLevel> log_level() const;

  /// Called on every hit, before loading, with the entry's metadata (joblib's
  /// cache_validation_callback); returning false computes the call anew and
  /// replaces the entry. Empty (the default): every entry is valid. Runs on
  /// the calling thread while the key's lock is held; it must not call this
  /// Memo. Shared by copies.
  void set_validator(MemoValidator validator);

  /// Passes `value` to the function without letting it enter the key
  /// (joblib's `ignore`): verbosity flags, thread counts, loggers.
  template <class T>
  static MemoIgnored<T> ignore(T&& value) {
    return MemoIgnored<T>{std::forward<T>(value)};
  }

  /// Returns fn(args...) from the entry of (function_id, version, args), or
  /// computes it, stores it and returns it. `fn` must be deterministic; its
  /// result (and each non-ignored argument) must be serializable by cereal.
  /// REQUIRES: a new `version` whenever fn's result for the same arguments
  /// changes without its code changing (data files it reads, libraries it
  /// calls), or always when key_by_code() is off. Exceptions of fn propagate;
  /// nothing is stored then.
  template <class Fn, class... Args>
  auto call(std::string_view function_id, int version, Fn&& fn, Args&&... args) {
    return invoke(function_id, version, {}, std::forward<Fn>(fn), std::forward<Args>(args)...)
        .value;
  }

  /// Same as call(), and says whether the result was cached.
  template <class Fn, class... Args>
  auto call_with_outcome(std::string_view function_id, int version, Fn&& fn, Args&&... args) {
    return invoke(function_id, version, {}, std::forward<Fn>(fn), std::forward<Args>(args)...);
  }

  /// A handle to the result of fn(args...) that computes or loads it on its
  /// first get() (joblib's call_and_shelve). The arguments are copied into it
  /// (an ignored reference must outlive it); the key is computed now.
  template <class Fn, class... Args>
  auto shelve(std::string_view function_id, int version, Fn&& fn, Args&&... args) const;

  /// A callable that memoizes fn; arguments at positions `ignore` (0-based)
  /// stay out of the key. The callable shares this Memo's state (copyable).
  template <class Fn>
  auto wrap(std::string function_id, int version, Fn fn, std::vector<size_t> ignore = {}) const {
    return [memo = *this, id = std::move(function_id), version, fn = std::move(fn),
            ignore = std::move(ignore)](auto&&... args) {
      return memo.invoke(id, version, ignore, fn, std::forward<decltype(args)>(args)...).value;
    };
  }

  /// True if the call fn(args...) of (function_id, version) has a committed
  /// entry (joblib's check_call_in_cache); computes nothing.
  template <class Fn, class... Args>
  bool contains(std::string_view function_id, int version, Fn&& fn, const Args&... args) const {
    using R = std::remove_cvref_t<
        std::invoke_result_t<Fn&, decltype(detail::unwrap(std::declval<const Args&>()))...>>;
    return find(memo_key(describe_call<R>(function_id, version, {}, code_of(fn), args...)))
        .has_value();
  }
  /// Removes every entry of `function_id` (any version), or of every function
  /// when empty; entries in use by a call at this moment are kept. Returns the
  /// number removed.
  size_t clear(std::string_view function_id = {}) const;
  /// Removes the entry of `key`; false if there is none or it is in use.
  bool remove(const std::string& key) const;

  /// The entry folder for `key` if it is committed.
  std::optional<std::filesystem::path> find(const std::string& key) const;

 private:
  /// Loads the result of entry folder `entry` of the Env.
  using LoadFn = std::function<void(const std::shared_ptr<Env>& env, const std::string& entry)>;
  /// Computes and stores the result into folder `dir` of the Env; returns its description.
  using ComputeFn = std::function<Value(const std::shared_ptr<Env>& env, const std::string& dir)>;

  /// The description (and so the key) of a call, without running it.
  /// The code identity that enters the key of fn's calls (empty when off).
  template <class Fn>
  CodeIdentity code_of(const Fn& fn) const {
    if (!key_by_code()) return {};
    return detail::code_identity_for_memo(detail::code_address(fn));
  }

  template <class R, class... Args>
  static detail::MemoCall describe_call(std::string_view function_id, int version,
                                        const std::vector<size_t>& ignore, CodeIdentity code,
                                        const Args&... args) {
    detail::MemoCall call;
    call.function = std::string(function_id);
    call.version = version;
    call.code = std::move(code.build_id);
    call.library = std::move(code.library);
    call.result_type = typeid(R).name();
    size_t index = 0;
    const auto describe = [&](const auto& arg) {
      using A = std::remove_cvref_t<decltype(arg)>;
      const bool listed = std::find(ignore.begin(), ignore.end(), index) != ignore.end();
      ++index;
      if constexpr (detail::IsIgnored<A>::value) {
        detail::MemoArgument a;
        a.type = typeid(std::remove_cvref_t<typename A::type>).name();
        a.ignored = true;
        return a;
      } else {
        if (listed) {
          detail::MemoArgument a;
          a.type = typeid(A).name();
          a.ignored = true;
          return a;
        }
        if constexpr (std::is_convertible_v<const A&, const char*> && !std::is_null_pointer_v<A>) {
          return detail::describe_argument(std::string(arg));  // string literals
        } else {
          return detail::describe_argument(arg);
        }
      }
    };
    (call.arguments.push_back(describe(args)), ...);
    (void)describe;  // unused for functions without arguments
    return call;
  }

  template <class Fn, class... Args>
  auto invoke(std::string_view function_id, int version, const std::vector<size_t>& ignore, Fn&& fn,
              Args&&... args) const {
    using R = std::remove_cvref_t<
        std::invoke_result_t<Fn&, decltype(detail::unwrap(std::declval<Args>()))...>>;
    static_assert(!std::is_void_v<R>, "a memoized function must return a value");
    const auto start = std::chrono::steady_clock::now();
    const detail::MemoCall call =
        describe_call<R>(function_id, version, ignore, code_of(fn), args...);

    std::optional<R> result;
    const LoadFn load = [&](const std::shared_ptr<Env>& env, const std::string& entry) {
      if constexpr (std::is_same_v<R, CellBuffer>) {
        if (detail::has_image_result(*env, entry)) {
          result = detail::load_image_result(env, entry);
          return;
        }
      }
      {
        const auto blob = detail::read_blob_result(*env, entry);
        detail::MemoryStreamBuf buf(blob->bytes());
        std::istream in(&buf);
        cereal::PortableBinaryInputArchive ar(in);
        R value{};
        ar(value);
        result = std::move(value);
      }
    };
    const ComputeFn compute = [&](const std::shared_ptr<Env>& env,
                                  const std::string& dir) -> Value {
      result.emplace(std::invoke(fn, detail::unwrap(std::forward<Args>(args))...));
      if constexpr (std::is_same_v<R, CellBuffer>) {
        if (*result && result->shape().rank() >= 1)
          return detail::save_image_result(env, dir, *result);
      }
      const std::string bytes = detail::portable_bytes([&](std::ostream& out) {
        cereal::PortableBinaryOutputArchive ar(out);
        ar(*result);
      });
      Value d = detail::store_blob_result(*env, dir, bytes);
      if (d.find("bytes")->as_int() <= static_cast<int64_t>(detail::kMemoJsonLimit)) {
        const std::string json = detail::cereal_json(*result);
        if (!json.empty()) d.set("json", json);
      }
      return d;
    };
    MemoOutcome outcome = run(call, load, compute);
    outcome.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return MemoResult<R>{std::move(*result), std::move(outcome)};
  }

  MemoOutcome run(const detail::MemoCall& call, const LoadFn& load, const ComputeFn& compute) const;

  template <class R>
  friend class MemoHandle;

  struct State;
  std::shared_ptr<State> state_;
};

/// A memoized call not made yet (Memo::shelve). Copies share one result.
/// Thread-safe: concurrent get()s compute or load it once.
template <class R>
class MemoHandle {
 public:
  /// The call's key (32 hex chars).
  const std::string& key() const { return shared_->key; }
  /// The result: on the first call, loaded from the entry or computed and
  /// stored (as Memo::call); later calls return the same value. If the first
  /// throws, the next get() tries again.
  const R& get() const {
    std::call_once(shared_->once, [&] {
      shared_->result.emplace(shared_->run());
      shared_->done.store(true, std::memory_order_release);
    });
    return shared_->result->value;
  }
  /// How get() was served; nullopt before it succeeded.
  std::optional<MemoOutcome> outcome() const {
    if (!shared_->done.load(std::memory_order_acquire)) return std::nullopt;
    return shared_->result->outcome;
  }
  /// True if the call has a committed entry now.
  bool contains() const { return shared_->memo.find(shared_->key).has_value(); }
  /// Removes the call's entry (a value get() already returned stays valid);
  /// false if there was none or it is in use.
  bool clear() const { return shared_->memo.remove(shared_->key); }

 private:
  friend class Memo;
  struct Shared {
    explicit Shared(Memo m) : memo(std::move(m)) {}
    Memo memo;
    std::string key;
    std::function<MemoResult<R>()> run;
    std::once_flag once;
    std::optional<MemoResult<R>> result;  // set once, inside `once`
    std::atomic<bool> done{false};        // result is set (outcome() reads it without `once`)
  };
  explicit MemoHandle(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  std::shared_ptr<Shared> shared_;
};

template <class Fn, class... Args>
auto Memo::shelve(std::string_view function_id, int version, Fn&& fn, Args&&... args) const {
  using F = std::decay_t<Fn>;
  using Tuple = std::tuple<std::decay_t<Args>...>;
  using R = std::remove_cvref_t<
      std::invoke_result_t<F&, decltype(detail::unwrap(std::declval<std::decay_t<Args>&>()))...>>;
  static_assert(!std::is_void_v<R>, "a memoized function must return a value");
  auto shared = std::make_shared<typename MemoHandle<R>::Shared>(*this);
  Tuple stored(std::forward<Args>(args)...);
  F f(std::forward<Fn>(fn));
  shared->key = std::apply(
      [&](const auto&... a) {
        return memo_key(describe_call<R>(function_id, version, {}, code_of(f), a...));
      },
      stored);
  shared->run = [memo = *this, id = std::string(function_id), version, f = std::move(f),
                 stored = std::move(stored)]() mutable {
    return std::apply([&](auto&... a) { return memo.invoke(id, version, {}, f, a...); }, stored);
  };
  return MemoHandle<R>(std::move(shared));
}

}  // namespace cellflow
