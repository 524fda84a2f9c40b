#include "cellflow/graph/op.hpp"

#include <fmt/format.h>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/suggest.hpp"

namespace cellflow {
namespace {

InvalidArgument param_error(std::string_view name, const std::string& what) {
  return InvalidArgument(fmt::format("param \"{}\" {}", name, what));
}

bool is_number_list(const Value& v, bool integers) {
  if (!v.is_array()) return false;
  for (const auto& x : v.as_array()) {
    if (integers ? !(x.is_int() ||
                     (x.is_float() &&
                      x.as_double() == static_cast<double>(static_cast<int64_t>(x.as_double()))))
                 : !x.is_number())
      return false;
  }
  return true;
}

bool is_integer(const Value& v) {
  if (v.is_int()) return true;
  if (!v.is_float()) return false;
  const double d = v.as_double();
  return d == static_cast<double>(static_cast<int64_t>(d));
}

Value to_floats(const Value& v) {
  Value::Array out;
  for (const auto& x : v.as_array()) out.emplace_back(x.as_double());
  return Value(std::move(out));
}

Value to_ints(const Value& v) {
  Value::Array out;
  for (const auto& x : v.as_array()) out.emplace_back(x.as_int());
  return Value(std::move(out));
}

// Checks one param against its type and returns it normalized.
Value normalize(const ParamSpec& spec, const Value& v) {
  const auto bad = [&](std::string_view expected) {
    return param_error(spec.name, fmt::format("must be {} (got {} {})", expected, v.kind_name(),
                                              to_json_compact(v)));
  };
  switch (spec.type) {
    case ParamType::kBool:
      if (!v.is_bool()) throw bad("true or false");
      return v;
    case ParamType::kInt:
      if (!is_integer(v)) throw bad("an integer");
      return Value(v.as_int());
    case ParamType::kFloat:
      if (!v.is_number()) throw bad("a number");
      return Value(v.as_double());
    case ParamType::kString:
      if (!v.is_string()) throw bad("a string");
      return v;
    case ParamType::kDType:
      if (!v.is_string() || !parse_dtype(v.as_string()))
        throw bad("a dtype (u8 u16 u32 u64 i8 i16 i32 i64 f32 f64)");
      return Value(std::string(dtype_name(*parse_dtype(v.as_string()))));
    case ParamType::kIntList:
      if (!is_number_list(v, true)) throw bad("a list of integers");
      return to_ints(v);
    case ParamType::kFloatList:
      if (!is_number_list(v, false)) throw bad("a list of numbers");
      return to_floats(v);
    case ParamType::kFloatOrList:
      if (v.is_number()) return Value(v.as_double());
      if (!is_number_list(v, false)) throw bad("a number or a list of numbers (one per axis)");
      return to_floats(v);
    case ParamType::kIntOrList:
      if (is_integer(v)) return Value(v.as_int());
      if (!is_number_list(v, true)) throw bad("an integer or a list of integers (one per axis)");
      return to_ints(v);
  }
  return v;
}

}  // namespace

std::string_view param_type_name(ParamType t) {
  switch (t) {
    case ParamType::kBool:
      return "bool";
    case ParamType::kInt:
      return "int";
    case ParamType::kFloat:
      return "float";
    case ParamType::kString:
      return "string";
    case ParamType::kDType:
      return "dtype";
    case ParamType::kIntList:
      return "int[]";
    case ParamType::kFloatList:
      return "float[]";
    case ParamType::kFloatOrList:
      return "float|float[]";
    case ParamType::kIntOrList:
      return "int|int[]";
  }
  return "?";
}

Params validate_params(const std::vector<ParamSpec>& specs, const Value& given,
                       std::filesystem::path base_dir) {
  if (!given.is_object())
    throw InvalidArgument(fmt::format("\"params\" must be an object (got {})", given.kind_name()));
  for (const auto& [name, v] : given.as_object()) {
    bool known = false;
    for (const auto& s : specs) known = known || s.name == name;
    if (!known) {
      std::string names;
      std::vector<std::string> list;
      for (const auto& s : specs) {
        names += (names.empty() ? "" : ", ") + s.name;
        list.push_back(s.name);
      }
      throw param_error(
          name, fmt::format("is not a param of this op{} (known: {})", did_you_mean(name, list),
                            names.empty() ? "none" : names));
    }
  }
  // Canonical order: the op's declaration order.
  Value out = Value::object();
  for (const auto& spec : specs) {
    const Value* v = given.find(spec.name);
    if (v != nullptr && !v->is_null()) {
      out.set(spec.name, normalize(spec, *v));
    } else if (!spec.default_value.is_null()) {
      out.set(spec.name, normalize(spec, spec.default_value));
    } else if (spec.required) {
      throw param_error(spec.name, fmt::format("is required ({})", spec.doc));
    }
  }
  return Params(std::move(out), std::move(base_dir));
}

bool Params::has(std::string_view name) const { return v_.find(name) != nullptr; }

const Value& Params::get(std::string_view name) const {
  const Value* v = v_.find(name);
  if (v == nullptr) throw param_error(name, "is not set");
  return *v;
}

bool Params::get_bool(std::string_view name) const { return get(name).as_bool(); }
int64_t Params::get_int(std::string_view name) const { return get(name).as_int(); }
double Params::get_float(std::string_view name) const { return get(name).as_double(); }
const std::string& Params::get_string(std::string_view name) const { return get(name).as_string(); }

DType Params::get_dtype(std::string_view name) const {
  auto t = parse_dtype(get(name).as_string());
  if (!t) throw param_error(name, "is not a dtype");
  return *t;
}

std::vector<int64_t> Params::get_ints(std::string_view name) const {
  std::vector<int64_t> out;
  for (const auto& x : get(name).as_array()) out.push_back(x.as_int());
  return out;
}

std::vector<double> Params::get_floats(std::string_view name) const {
  std::vector<double> out;
  for (const auto& x : get(name).as_array()) out.push_back(x.as_double());
  return out;
}

std::vector<double> Params::get_floats_per_axis(std::string_view name, int rank) const {
  const Value& v = get(name);
  if (v.is_number()) return std::vector<double>(static_cast<size_t>(rank), v.as_double());
  auto out = get_floats(name);
  if (out.size() != static_cast<size_t>(rank))
    throw param_error(name,
                      fmt::format("has {} values but the image has {} axes", out.size(), rank));
  return out;
}

std::vector<int64_t> Params::get_ints_per_axis(std::string_view name, int rank) const {
  const Value& v = get(name);
  auto out =
      v.is_int() ? std::vector<int64_t>(static_cast<size_t>(rank), v.as_int()) : get_ints(name);
  if (out.size() != static_cast<size_t>(rank))
    throw param_error(name,
                      fmt::format("has {} values but the image has {} axes", out.size(), rank));
  // A size per axis (region, factors, radius...): beyond 2^48, arithmetic on it overflows.
  constexpr int64_t kMaxExtent = int64_t{1} << 48;
  for (int64_t x : out) {
    if (x > kMaxExtent || x < -kMaxExtent)
      throw param_error(name, fmt::format("must be within +-2^48 on every axis (got {})", x));
  }
  return out;
}

std::filesystem::path Params::get_path(std::string_view name) const {
  namespace fs = std::filesystem;
  const std::string& text = get_string(name);
  if (text.empty()) throw param_error(name, "must not be empty");
  const fs::path given(text);
  const fs::path from_cwd = fs::absolute(given).lexically_normal();
  if (given.is_absolute() || base_dir_.empty()) return from_cwd;
  const fs::path from_base = (fs::absolute(base_dir_) / given).lexically_normal();
  if (from_base == from_cwd) return from_cwd;
  std::error_code ec;
  if (fs::exists(from_base, ec)) return from_base;
  if (fs::exists(from_cwd, ec)) return from_cwd;
  throw InvalidArgument(fmt::format(
      "param \"{}\": no file or folder \"{}\": neither {} (from the graph file's folder) nor {} "
      "(from the current directory) exists",
      name, text, from_base.string(), from_cwd.string()));
}

void NodeKernel::compute(const Box& /*out_box*/, std::span<const InputRegion> /*inputs*/,
                         CellBuffer& /*out*/) const {
  throw NodeError("this op produces a table: use compute_rows()");
}

Table NodeKernel::compute_rows(const Box& /*out_box*/,
                               std::span<const InputRegion> /*inputs*/) const {
  throw NodeError("this op produces an image, not a table");
}

Table NodeKernel::merge_rows(std::vector<Table> parts) const {
  Table out;
  for (const auto& p : parts) out.append(p);
  return out;
}

Box NodeKernel::input_region(size_t /*input*/, const Box& out_box,
                             const ImageInfo& input_info) const {
  return out_box.intersect(Box::from_shape(input_info.shape));
}

}  // namespace cellflow
