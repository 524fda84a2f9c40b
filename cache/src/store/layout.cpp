#include "cellflow/store/layout.hpp"

namespace cellflow::layout {

bool is_node_name(std::string_view name) {
  if (name.size() != 32) return false;
  for (const char c : name)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool is_temp_name(std::string_view name) {
  return name.size() > 1 && name[0] == '.' && name.find(".tmp.") != std::string_view::npos;
}

bool is_trash_name(std::string_view name) {
  return name.size() > 1 && name[0] == '.' && name.find(kTrashTag) != std::string_view::npos;
}

bool is_memo_trash_name(std::string_view name) {
  return name.find(kMemoRemovedTag) != std::string_view::npos ||
         name.find(kMemoDamagedTag) != std::string_view::npos;
}

std::optional<int64_t> parse_cell_index(std::string_view name) {
  if (name.empty() || name.size() > 18) return std::nullopt;
  if (name.size() > 1 && name[0] == '0') return std::nullopt;  // cell() never writes "01"
  int64_t v = 0;
  for (const char c : name) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

namespace {
std::string join_folder(std::string_view a, std::string_view b) {
  std::string out(a);
  out += '/';
  out += b;
  return out;
}
}  // namespace

std::string in_node(std::string_view hash, std::string_view name) {
  std::string out(hash);
  out += '/';
  out += name;
  return out;
}

std::string zarray(std::string_view hash) {
  std::string out = array(hash);
  out += '/';
  out += kZarray;
  return out;
}

std::string cell(std::string_view folder, const CellIndex& index) {
  std::string out(folder);
  for (const int64_t i : index) {
    out += '/';
    out += std::to_string(i);
  }
  return out;
}

std::string shard(std::string_view folder, const CellIndex& shard_index) {
  return cell(join_folder(folder, kShardFolder), shard_index);
}

std::string cell_identity(std::string_view owner, const CellIndex& index) {
  std::string out(owner);
  out += ':';
  for (int d = 0; d < index.rank(); ++d) {
    if (d > 0) out += ',';
    out += std::to_string(index[d]);
  }
  return out;
}

std::string memo_entry_file(std::string_view key) {
  std::string out = memo_entry(key);
  out += '/';
  out += kMemoEntryFile;
  return out;
}

}  // namespace cellflow::layout
