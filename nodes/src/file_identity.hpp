// Private to cellflow_nodes: what identifies the data of a file-reading
// source node (read.image, read.zarr) for its hash, and the shared `hash`
// param. Thread-safe: free functions without shared state.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "cellflow/graph/op.hpp"

namespace cellflow::nodes::detail {

/// How a source identifies its data: by the files' path, size and mtime
/// ("stat", cheap) or by an XXH3-128 of their bytes ("content").
enum class HashMode { kStat, kContent };

/// The spec of the `hash` param shared by the readers.
ParamSpec hash_mode_param();
/// Parses the `hash` param; throws InvalidArgument naming it.
HashMode parse_hash_mode(const Params& params);

/// "<absolute path> size <bytes> mtime <ns>" of a regular file. Throws
/// InvalidArgument (param "path") if it does not exist or is not a file.
std::string stat_identity(const std::filesystem::path& file);

/// XXH3-128 over a sequence of byte strings and whole files (streamed in
/// blocks: a file is never held in memory).
class ContentHasher {
 public:
  ContentHasher();
  ~ContentHasher();
  ContentHasher(const ContentHasher&) = delete;
  ContentHasher& operator=(const ContentHasher&) = delete;

  void add(std::string_view bytes);
  /// Throws IoError naming the file if it cannot be read.
  void add_file(const std::filesystem::path& file);
  /// 32 lowercase hex characters.
  std::string hex() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace cellflow::nodes::detail
