// Small file helpers: whole-file reads and atomic (temp file + rename) writes.
// Thread-safe and process-safe: concurrent writers of one path each commit a
// whole file, and readers never see a partial one.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace cellflow {

/// Writes `data` to a unique temporary file beside `path`, then renames it over
/// `path`. Creates parent folders. Throws IoError naming the file.
void write_file_atomic(const std::filesystem::path& path, std::string_view data);
/// The whole file, or nullopt if it does not exist. Throws IoError on other errors.
std::optional<std::string> read_file(const std::filesystem::path& path);
/// The whole file into `buffer`, reusing its memory (a thread's buffer for
/// one chunk after another is read into warm pages, not fresh ones); false
/// if the file does not exist. Throws IoError on other errors.
bool read_file_reusing(const std::filesystem::path& path, std::string& buffer);
/// Hands out a thread's reusable byte buffer (`thread_local std::string`
/// of the caller), so that file contents and encoded cells land in warm
/// pages instead of fresh ones, one use after another; when the use ends,
/// a buffer that grew past 64 MiB is let go. One use at a time per buffer.
class ReusedBuffer {
 public:
  explicit ReusedBuffer(std::string& thread_buffer) : s_(thread_buffer) {}
  ~ReusedBuffer() {
    if (s_.capacity() > (size_t{64} << 20)) std::string().swap(s_);
  }
  ReusedBuffer(const ReusedBuffer&) = delete;
  ReusedBuffer& operator=(const ReusedBuffer&) = delete;
  std::string& operator*() { return s_; }

 private:
  std::string& s_;
};
/// Reads from `fd` to its end into `out`, which is first sized for the
/// `expected` bytes (fstat's size) so that a file that did not change is read
/// straight into place, with no growing copy and no read after it but the
/// one that confirms its end. Returns 0, or the errno of a failed read.
int read_to_end(int fd, std::string& out, size_t expected);

}  // namespace cellflow
