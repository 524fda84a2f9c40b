#include "cellflow/graph/printable.hpp"

#include <fmt/format.h>

namespace cellflow {

std::string printable_text(std::string_view text, bool one_line) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\n' && !one_line) {
      out += '\n';
    } else if (c == '\n' || c == '\t') {
      out += ' ';
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += ch;
    }
  }
  return out;
}

std::string dot_quoted_text(std::string_view text) {
  std::string out;
  for (const char ch : printable_text(text)) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out;
}

}  // namespace cellflow
