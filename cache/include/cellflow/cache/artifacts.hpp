// ArtifactWriter: the place where a node (<cache>/<hash>/artifacts/) or a
// memoized call (<cache>/memo/<key>/artifacts/) keeps what a person wants to
// look at: logs, plots (PNG), tables (CSV). Every file goes through an Env
// (store/env.hpp): written to a temporary name and renamed into place
// (readers never see a partial file); a line appended to a log rewrites the
// log under the folder's log lock (layout::kLogLock), so concurrent appenders
// lose no line. The folder is created on the first write. While a node's cell or a memoized
// function is computed, the framework makes its writer current for the computing thread
// (ScopedArtifacts), and warnings logged through cellflow::log() are appended to its warnings.log.
// Thread-safe and process-safe: a writer is an Env and a folder in it; files
// are committed whole.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/table.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

struct ArtifactInfo {
  std::string name;
  uint64_t bytes = 0;
};

class ArtifactWriter {
 public:
  /// The log file that warnings logged during a computation go to.
  static constexpr const char* kWarningsLog = "warnings.log";

  /// The folder `folder` of `env` ("" is the Env's root).
  ArtifactWriter(std::shared_ptr<Env> env, std::string folder);
  /// The folder at `dir` (an Env of its parent folder, created if missing).
  explicit ArtifactWriter(const std::filesystem::path& dir);

  /// The folder as a user reads it.
  const std::filesystem::path& dir() const { return dir_; }

  /// Names are plain file names ("density.png", "stats.csv"): no folders, not
  /// starting with '.'; InvalidArgument otherwise. Writes replace a file of
  /// the same name atomically. Throws IoError when the file cannot be written.
  void write_text(std::string_view name, std::string_view text) const;
  /// The table as CSV (Table::to_csv); ".csv" is appended when `name` has no extension.
  void write_table(std::string_view name, const Table& table) const;
  /// A grayscale PNG of a 2-D u8 or u16 image (rows = axis 0). ".png" is
  /// appended when `name` has no extension. InvalidArgument for other ranks or dtypes.
  void write_png(std::string_view name, const CellBuffer& image) const;
  /// An N-D image (rank 2-5) as an OME-Zarr (NGFF 0.4) group "<name>.ome.zarr"
  /// (the suffix is added when missing) that napari and zarr-python open:
  /// .zgroup, .zattrs with one-level multiscales, and the Zarr v2 array "0"
  /// in chunks of at most 64 per axis. Written aside and renamed into place:
  /// a reader sees the previous image, the whole new one, or — for the moment
  /// between removing the old folder and renaming the new one in — none;
  /// never a partial image. A failed write leaves the previous image.
  void write_image(std::string_view name, const CellBuffer& image) const;
  /// Appends `line` (a newline is added) to the log `name`. Waits for other
  /// appenders to this folder (each holds the log lock for one read and one
  /// write).
  void append_log(std::string_view name, std::string_view line) const;

  /// The artifacts present, sorted by name (temporary files excluded).
  std::vector<ArtifactInfo> list() const;

 private:
  std::string file(std::string_view name) const;
  std::shared_ptr<Env> env_;
  std::string folder_;
  std::filesystem::path dir_;
};

/// The writer made current for this thread by the innermost ScopedArtifacts,
/// or nullptr (ops call it from compute() to store plots and tables).
const ArtifactWriter* current_artifacts();

/// Makes `writer` current for this thread until destroyed (nests; nullptr
/// hides an outer one).
class ScopedArtifacts {
 public:
  explicit ScopedArtifacts(const ArtifactWriter* writer);
  ~ScopedArtifacts();
  ScopedArtifacts(const ScopedArtifacts&) = delete;
  ScopedArtifacts& operator=(const ScopedArtifacts&) = delete;

 private:
  const ArtifactWriter* previous_;
};

namespace detail {
/// Appends "<UTC time> <level>: <message>" to the current writer's
/// warnings.log, if there is one. Called by cellflow::log(); never throws.
void log_to_current_artifacts(std::string_view level, std::string_view message) noexcept;
}  // namespace detail

/// Encodes a 2-D u8 or u16 image as a grayscale PNG file's bytes (zlib,
/// no filtering). Throws InvalidArgument for other ranks or dtypes.
std::string encode_png(const CellBuffer& image);

}  // namespace cellflow
