// Value: a JSON-like dynamic value (null, bool, integer, float, string, array,
// object with insertion-ordered keys) used for op params and definitions.
// Lives in cache/ because .zarray/.zattrs use it too. A value type.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace cellflow {

class Value {
 public:
  using Array = std::vector<Value>;
  /// Keys keep the order they were written in (save->load->save is byte-identical).
  using Object = std::vector<std::pair<std::string, Value>>;
  enum class Kind { kNull, kBool, kInt, kFloat, kString, kArray, kObject };

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : v_(b) {}
  Value(int i) : v_(static_cast<int64_t>(i)) {}
  Value(int64_t i) : v_(i) {}
  Value(uint64_t i) : v_(static_cast<int64_t>(i)) {}
  Value(double d) : v_(d) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(Array a) : v_(std::move(a)) {}
  Value(Object o) : v_(std::move(o)) {}
  static Value array() { return Value(Array{}); }
  static Value object() { return Value(Object{}); }
  template <class T>
  static Value list(const std::vector<T>& items) {
    Array a;
    for (const auto& x : items) a.emplace_back(x);
    return Value(std::move(a));
  }

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_null() const { return kind() == Kind::kNull; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_array() const { return kind() == Kind::kArray; }
  bool is_object() const { return kind() == Kind::kObject; }

  /// Accessors throw InvalidArgument on a kind mismatch.
  bool as_bool() const;
  int64_t as_int() const;
  /// Integers convert to double.
  double as_double() const;
  const std::string& as_string() const;
  const Array& as_array() const;
  Array& as_array();
  const Object& as_object() const;
  Object& as_object();

  /// Object lookup: nullptr if absent (or not an object).
  const Value* find(std::string_view key) const;
  /// Object insert-or-assign (keeps the position of an existing key).
  void set(std::string key, Value v);

  /// "null", "bool", "integer", "number", "string", "array", "object".
  std::string_view kind_name() const;

  friend bool operator==(const Value& a, const Value& b) { return a.v_ == b.v_; }

 private:
  std::variant<std::nullptr_t, bool, int64_t, double, std::string, Array, Object> v_;
};

/// Parses JSON text. Throws GraphError "<source>:<line>:<col>: <what>" on bad input.
Value parse_json(std::string_view text, const std::string& source = "<json>");
/// Human-friendly JSON: 2-space indent, arrays of scalars on one line, keys in
/// stored order, trailing newline. Deterministic.
std::string to_json(const Value& v);
/// Compact JSON on one line, keys in stored order.
std::string to_json_compact(const Value& v);
/// Canonical JSON for hashing: compact, object keys sorted, floats in
/// shortest round-trip form with a decimal point or exponent.
std::string to_canonical_json(const Value& v);

}  // namespace cellflow
