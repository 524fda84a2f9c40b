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
/// Reads from `fd` to its end into `out`, which is first sized for the
/// `expected` bytes (fstat's size) so that a file that did not change is read
/// straight into place, with no growing copy and no read after it but the
/// one that confirms its end. Returns 0, or the errno of a failed read.
int read_to_end(int fd, std::string& out, size_t expected);

}  // namespace cellflow
