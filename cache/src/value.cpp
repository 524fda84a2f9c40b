#include "cellflow/cache/value.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "cellflow/cache/error.hpp"

namespace cellflow {

// ---- accessors -------------------------------------------------------------

namespace {
[[noreturn]] void kind_error(const Value& v, std::string_view wanted) {
  throw InvalidArgument(fmt::format("expected {}, got {}", wanted, v.kind_name()));
}
}  // namespace

bool Value::as_bool() const {
  if (!is_bool()) kind_error(*this, "a boolean");
  return std::get<bool>(v_);
}

int64_t Value::as_int() const {
  if (is_int()) return std::get<int64_t>(v_);
  if (is_float()) {
    const double d = std::get<double>(v_);
    if (std::floor(d) == d && std::abs(d) < 9.0e15) return static_cast<int64_t>(d);
  }
  kind_error(*this, "an integer");
}

double Value::as_double() const {
  if (is_float()) return std::get<double>(v_);
  if (is_int()) return static_cast<double>(std::get<int64_t>(v_));
  kind_error(*this, "a number");
}

const std::string& Value::as_string() const {
  if (!is_string()) kind_error(*this, "a string");
  return std::get<std::string>(v_);
}

const Value::Array& Value::as_array() const {
  if (!is_array()) kind_error(*this, "an array");
  return std::get<Array>(v_);
}

Value::Array& Value::as_array() {
  if (!is_array()) kind_error(*this, "an array");
  return std::get<Array>(v_);
}

const Value::Object& Value::as_object() const {
  if (!is_object()) kind_error(*this, "an object");
  return std::get<Object>(v_);
}

Value::Object& Value::as_object() {
  if (!is_object()) kind_error(*this, "an object");
  return std::get<Object>(v_);
}

const Value* Value::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : std::get<Object>(v_))
    if (k == key) return &v;
  return nullptr;
}

void Value::set(std::string key, Value v) {
  auto& obj = as_object();
  for (auto& [k, old] : obj) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  obj.emplace_back(std::move(key), std::move(v));
}

std::string_view Value::kind_name() const {
  switch (kind()) {
    case Kind::kNull:
      return "null";
    case Kind::kBool:
      return "boolean";
    case Kind::kInt:
      return "integer";
    case Kind::kFloat:
      return "number";
    case Kind::kString:
      return "string";
    case Kind::kArray:
      return "array";
    case Kind::kObject:
      return "object";
  }
  return "?";
}

// ---- parser ----------------------------------------------------------------

namespace {

class Parser {
 public:
  Parser(std::string_view text, const std::string& source) : s_(text), source_(source) {}

  Value parse_document() {
    skip_ws();
    Value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    throw GraphError(fmt::format("{}:{}:{}: invalid JSON: {}", source_, line, col, what));
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }

  bool consume(std::string_view word) {
    if (s_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  bool at(char c) const { return pos_ < s_.size() && s_[pos_] == c; }
  bool at_digit() const { return pos_ < s_.size() && is_digit(s_[pos_]); }

  Value parse_value(int depth) {
    if (depth > 200) fail("nesting too deep");
    if (pos_ >= s_.size()) fail("unexpected end of input");
    const char c = s_[pos_];
    if (c == '{') return parse_object(depth);
    if (c == '[') return parse_array(depth);
    if (c == '"') return Value(parse_string());
    if (c == '-' || is_digit(c)) return parse_number();
    if (c == '+' || c == '.') bad_number(pos_, "a number starts with '-' or a digit");
    if (consume("true")) return Value(true);
    if (consume("false")) return Value(false);
    if (consume("null")) return Value(nullptr);
    fail(fmt::format("unexpected character '{}'", c));
  }

  Value parse_object(int depth) {
    ++pos_;  // {
    Value::Object obj;
    skip_ws();
    if (at('}')) {
      ++pos_;
      return Value(std::move(obj));
    }
    while (true) {
      skip_ws();
      if (at('}')) fail("expected a quoted key after ',' (no trailing commas in JSON)");
      if (!at('"')) fail("expected a quoted key");
      const size_t key_pos = pos_;
      std::string key = parse_string();
      for (const auto& kv : obj) {
        if (kv.first == key) {
          pos_ = key_pos;
          fail(fmt::format("duplicate key \"{}\"", key));
        }
      }
      skip_ws();
      if (!at(':')) fail("expected ':' after a key");
      ++pos_;
      skip_ws();
      Value v = parse_value(depth + 1);
      obj.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (at(',')) {
        ++pos_;
        continue;
      }
      if (at('}')) {
        ++pos_;
        return Value(std::move(obj));
      }
      fail("expected ',' or '}' in an object");
    }
  }

  Value parse_array(int depth) {
    ++pos_;  // [
    Value::Array arr;
    skip_ws();
    if (at(']')) {
      ++pos_;
      return Value(std::move(arr));
    }
    while (true) {
      skip_ws();
      if (at(']')) fail("expected a value after ',' (no trailing commas in JSON)");
      arr.push_back(parse_value(depth + 1));
      skip_ws();
      if (at(',')) {
        ++pos_;
        continue;
      }
      if (at(']')) {
        ++pos_;
        return Value(std::move(arr));
      }
      fail("expected ',' or ']' in an array");
    }
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t parse_hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_++];
      v <<= 4;
      if (is_digit(h))
        v |= static_cast<uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f')
        v |= static_cast<uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        v |= static_cast<uint32_t>(h - 'A' + 10);
      else
        fail("bad hex digit in \\u escape");
    }
    return v;
  }

  // After the 'u' of a \u escape: one code point, a UTF-16 surrogate pair taken
  // together. A lone surrogate has no UTF-8 form, so it is an error, not garbage.
  uint32_t parse_unicode_escape() {
    const size_t escape_pos = pos_ - 2;
    const uint32_t cp = parse_hex4();
    if (cp >= 0xDC00 && cp < 0xE000) {
      pos_ = escape_pos;
      fail(
          fmt::format("lone low surrogate \\u{:04X} (expected a high surrogate \\uD800-\\uDBFF "
                      "before it)",
                      cp));
    }
    if (cp < 0xD800 || cp >= 0xDC00) return cp;
    const size_t low_pos = pos_;
    if (!consume("\\u")) {
      fail(
          fmt::format("lone high surrogate \\u{:04X} (expected a low surrogate \\uDC00-\\uDFFF "
                      "after it)",
                      cp));
    }
    const uint32_t lo = parse_hex4();
    if (lo < 0xDC00 || lo >= 0xE000) {
      pos_ = low_pos;
      fail(fmt::format("expected a low surrogate \\uDC00-\\uDFFF after \\u{:04X} (got \\u{:04X})",
                       cp, lo));
    }
    return 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
  }

  // Length of the well-formed UTF-8 sequence at pos_ (RFC 3629: no overlong forms,
  // no surrogates, nothing above U+10FFFF), or 0.
  size_t utf8_sequence_length() const {
    const auto byte = [&](size_t i) {
      return pos_ + i < s_.size() ? static_cast<unsigned char>(s_[pos_ + i]) : 0u;
    };
    const auto cont = [&](size_t i, unsigned lo = 0x80, unsigned hi = 0xBF) {
      const unsigned b = byte(i);
      return b >= lo && b <= hi;
    };
    const unsigned b0 = byte(0);
    if (b0 >= 0xC2 && b0 <= 0xDF) return cont(1) ? 2 : 0;
    if (b0 == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
    if (b0 == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
    if (b0 >= 0xE1 && b0 <= 0xEF) return cont(1) && cont(2) ? 3 : 0;
    if (b0 == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    if (b0 >= 0xF1 && b0 <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (b0 == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
    return 0;
  }

  std::string parse_string() {
    ++pos_;  // "
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_];
      if (static_cast<unsigned char>(c) >= 0x80) {
        const size_t n = utf8_sequence_length();
        if (n == 0) fail("invalid UTF-8 in a string (JSON text must be UTF-8)");
        out.append(s_.substr(pos_, n));
        pos_ += n;
        continue;
      }
      if (static_cast<unsigned char>(c) < 0x20) {
        fail(
            fmt::format("control character 0x{:02X} in a string (write it as an escape, "
                        "e.g. \\n or \\u{:04X})",
                        static_cast<unsigned>(c), static_cast<unsigned>(c)));
      }
      ++pos_;
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u':
          append_utf8(out, parse_unicode_escape());
          break;
        default:
          pos_ -= 2;
          fail(
              fmt::format("bad escape '\\{}' (expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t "
                          "\\uXXXX)",
                          e));
      }
    }
  }

  // Reports the number that starts at `start` (as far as it looks like one) there.
  [[noreturn]] void bad_number(size_t start, std::string_view why) {
    size_t end = start;
    while (end < s_.size() &&
           (is_digit(s_[end]) || std::string_view(".eE+-").find(s_[end]) != std::string_view::npos))
      ++end;
    pos_ = start;
    fail(fmt::format("bad number \"{}\": {}", s_.substr(start, end - start), why));
  }

  // RFC 8259: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
  Value parse_number() {
    const size_t start = pos_;
    const auto digits = [&] {
      while (at_digit()) ++pos_;
    };
    if (at('-')) ++pos_;
    if (!at_digit())
      bad_number(start, at('.') ? "expected a digit before '.'" : "expected a digit after '-'");
    if (at('0')) {
      ++pos_;
      if (at_digit()) bad_number(start, "leading zeros are not allowed");
    } else {
      digits();
    }
    bool is_float = false;
    if (at('.')) {
      is_float = true;
      ++pos_;
      if (!at_digit()) bad_number(start, "expected a digit after '.'");
      digits();
    }
    if (at('e') || at('E')) {
      is_float = true;
      ++pos_;
      if (at('+') || at('-')) ++pos_;
      if (!at_digit()) bad_number(start, "expected a digit in the exponent");
      digits();
    }
    const char* b = s_.data() + start;
    const char* e = s_.data() + pos_;
    if (!is_float) {
      int64_t i = 0;
      auto [p, ec] = std::from_chars(b, e, i);
      if (ec == std::errc() && p == e) return Value(i);
      // Beyond int64: taken as a double below.
    }
    double d = 0;
    auto [p, ec] = std::from_chars(b, e, d);
    if (ec != std::errc() || p != e) bad_number(start, "out of range for a double");
    return Value(d);
  }

  std::string_view s_;
  const std::string& source_;
  size_t pos_ = 0;
};

// ---- writers ---------------------------------------------------------------

void write_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

void write_double(std::string& out, double d) {
  if (!std::isfinite(d)) throw InvalidArgument(fmt::format("cannot write {} as JSON", d));
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, d);
  std::string_view s(buf, static_cast<size_t>(p - buf));
  out += s;
  if (s.find_first_of(".eEn") == std::string_view::npos) out += ".0";
}

void write_scalar(std::string& out, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNull:
      out += "null";
      break;
    case Value::Kind::kBool:
      out += v.as_bool() ? "true" : "false";
      break;
    case Value::Kind::kInt:
      out += std::to_string(v.as_int());
      break;
    case Value::Kind::kFloat:
      write_double(out, v.as_double());
      break;
    case Value::Kind::kString:
      write_string(out, v.as_string());
      break;
    default:
      break;
  }
}

// The one-line forms: compact (to_json_compact, and sorted for to_canonical_json) or
// with a space after ',' and ':' (what a person writes; to_json's short lines).
struct OneLine {
  bool spaced = false;
  bool sort_keys = false;
};

void write_one_line(std::string& out, const Value& v, OneLine style) {
  const std::string_view comma = style.spaced ? ", " : ",";
  const std::string_view colon = style.spaced ? ": " : ":";
  if (v.is_array()) {
    out += '[';
    bool first = true;
    for (const auto& x : v.as_array()) {
      if (!first) out += comma;
      first = false;
      write_one_line(out, x, style);
    }
    out += ']';
  } else if (v.is_object()) {
    std::vector<const std::pair<std::string, Value>*> items;
    for (const auto& kv : v.as_object()) items.push_back(&kv);
    if (style.sort_keys)
      std::sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
    out += '{';
    bool first = true;
    for (const auto* kv : items) {
      if (!first) out += comma;
      first = false;
      write_string(out, kv->first);
      out += colon;
      write_one_line(out, kv->second, style);
    }
    out += '}';
  } else {
    write_scalar(out, v);
  }
}

// Scalars, empty containers and arrays whose items are scalars or empty objects.
bool is_flat(const Value& v) {
  if (v.is_object()) return v.as_object().empty();
  if (!v.is_array()) return true;
  for (const auto& x : v.as_array())
    if (x.is_array() || (x.is_object() && !x.as_object().empty())) return false;
  return true;
}

constexpr size_t kLineWidth = 100;

void write_pretty(std::string& out, const Value& v, int indent) {
  const std::string pad(static_cast<size_t>(indent + 2), ' ');
  // A flat value stays on one line even when it is longer than kLineWidth.
  const bool flat = is_flat(v);
  if (flat || indent > 0) {
    std::string one_line;
    write_one_line(one_line, v, {.spaced = true});
    if (flat || one_line.size() + static_cast<size_t>(indent) <= kLineWidth) {
      out += one_line;
      return;
    }
  }
  if (v.is_array()) {
    out += "[\n";
    bool first = true;
    for (const auto& x : v.as_array()) {
      if (!first) out += ",\n";
      first = false;
      out += pad;
      write_pretty(out, x, indent + 2);
    }
    out += '\n' + std::string(static_cast<size_t>(indent), ' ') + ']';
    return;
  }
  out += "{\n";
  bool first = true;
  for (const auto& [k, x] : v.as_object()) {
    if (!first) out += ",\n";
    first = false;
    out += pad;
    write_string(out, k);
    out += ": ";
    write_pretty(out, x, indent + 2);
  }
  out += '\n' + std::string(static_cast<size_t>(indent), ' ') + '}';
}

}  // namespace

Value parse_json(std::string_view text, const std::string& source) {
  return Parser(text, source).parse_document();
}

std::string to_json(const Value& v) {
  std::string out;
  write_pretty(out, v, 0);
  out += '\n';
  return out;
}

std::string to_json_compact(const Value& v) {
  std::string out;
  write_one_line(out, v, {});
  return out;
}

std::string to_canonical_json(const Value& v) {
  std::string out;
  write_one_line(out, v, {.sort_keys = true});
  return out;
}

}  // namespace cellflow
