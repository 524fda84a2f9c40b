// MemoryEnv: an Env that keeps the cache in memory, for tests. It can plant
// any kind of entry (links, FIFOs...) and inject a fault at any numbered step
// of the writes that go through it — ENOSPC, EIO, a silently short write, or a
// crash — so that every write path can be tested without root or real mounts.
//
// Steps: a write_atomic/write_new counts "create temp", "write", ["sync"],
// "rename", ["sync folder"]; make_folders, rename, remove and touch count one
// step each. A crash freezes the store at that step (what a killed process
// leaves): that step and every later call throw SimulatedCrash until
// restart(). restart(true) also models a power cut: files whose data was not
// synced lose it (read back empty), renames not followed by a folder sync are
// kept (journaled file systems keep metadata order) — a documented model, not
// a promise about every file system.
// Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "cellflow/cache/error.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

/// Thrown by a MemoryEnv that "crashed": the process is considered dead.
class SimulatedCrash : public IoError {
 public:
  SimulatedCrash() : IoError("simulated crash") {}
};

class MemoryEnv final : public Env {
 public:
  enum class Fault { kNoSpace, kIoError, kShortWrite, kCrash };

  explicit MemoryEnv(std::filesystem::path root = "/memory-cache");
  ~MemoryEnv() override;

  const std::filesystem::path& root() const override { return root_; }
  EntryInfo stat(std::string_view path) override;
  std::optional<std::string> read(std::string_view path) override;
  void write_atomic(std::string_view path, std::string_view data, Durability durability) override;
  bool write_new(std::string_view path, std::string_view data, Durability durability) override;
  void make_folders(std::string_view path) override;
  void rename(std::string_view from, std::string_view to) override;
  std::vector<DirEntry> list(std::string_view path) override;
  bool remove(std::string_view path) override;
  void touch(std::string_view path) override;
  void sync_folder(std::string_view path) override;
  std::unique_ptr<EnvLock> lock(std::string_view path, int64_t offset, LockMode mode,
                                std::optional<std::chrono::milliseconds> timeout) override;
  bool locked_elsewhere(std::string_view path, int64_t offset, LockMode mode) override;

  /// Makes step number `step` (0-based, counted from now on) fail with `fault`.
  void inject(int64_t step, Fault fault);
  /// Steps counted since construction or the last reset_steps().
  int64_t steps() const;
  void reset_steps();
  bool crashed() const;
  /// Brings a crashed store back (a new process); `power_cut`: unsynced data is lost.
  void restart(bool power_cut);
  /// Puts an entry of any kind at `path` (parents created as folders), bypassing faults.
  void plant(std::string_view path, EntryKind kind, std::string data = {});
  /// Every path and its kind and data, sorted (to compare whole stores).
  std::map<std::string, std::pair<EntryKind, std::string>> snapshot() const;

  struct Impl;  // private to memory_env.cpp

 private:
  bool commit(std::string_view path, std::string_view data, Durability durability,
              bool only_if_new);
  std::filesystem::path root_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellflow
