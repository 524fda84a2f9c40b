#include "cellflow/cache/code_identity.hpp"

#include <elf.h>
#include <fmt/format.h>
#include <link.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>

namespace cellflow {
namespace {

struct Search {
  uintptr_t address = 0;
  bool found = false;
  CodeIdentity result;
};

size_t align4(size_t n) { return (n + 3) & ~size_t{3}; }

// The NT_GNU_BUILD_ID note among the object's PT_NOTE segments, as hex.
std::string build_id(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    const auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
    const unsigned char* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      ElfW(Nhdr) nh;
      std::memcpy(&nh, p, sizeof nh);
      const unsigned char* name = p + sizeof nh;
      const unsigned char* desc = name + align4(nh.n_namesz);
      const unsigned char* next = desc + align4(nh.n_descsz);
      if (next > end) break;
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
        std::string hex;
        for (ElfW(Word) k = 0; k < nh.n_descsz; ++k) hex += fmt::format("{:02x}", desc[k]);
        return hex;
      }
      p = next;
    }
  }
  return {};
}

int visit(dl_phdr_info* info, size_t, void* data) {
  auto* s = static_cast<Search*>(data);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    const uintptr_t begin = info->dlpi_addr + ph.p_vaddr;
    if (s->address >= begin && s->address < begin + ph.p_memsz) {
      s->found = true;
      s->result.library = info->dlpi_name != nullptr ? info->dlpi_name : "";
      if (s->result.library.empty()) {  // the program itself
        std::error_code ec;
        s->result.library = std::filesystem::read_symlink("/proc/self/exe", ec).string();
      }
      s->result.build_id = build_id(info);
      return 1;
    }
  }
  return 0;
}

}  // namespace

std::optional<CodeIdentity> code_identity_of(const void* address) {
  Search s;
  s.address = reinterpret_cast<uintptr_t>(address);
  dl_iterate_phdr(visit, &s);
  if (!s.found) return std::nullopt;
  return s.result;
}

}  // namespace cellflow
