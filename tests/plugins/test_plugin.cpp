// Plugins that fail to load in each way the loader must report, one library
// per TEST_PLUGIN_* variant (see tests/plugins/CMakeLists.txt).
#include <memory>
#include <stdexcept>
#include <string>

#include "cellflow/plugins/plugin.hpp"

namespace {

using namespace cellflow;

/// A do-nothing op with a given name.
class NamedOp final : public Op {
 public:
  explicit NamedOp(std::string name) : name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  int version() const override { return 1; }
  std::string_view doc() const override { return "test op"; }
  std::vector<ParamSpec> params() const override { return {}; }
  int min_inputs() const override { return 1; }
  std::unique_ptr<NodeKernel> bind(const Params&,
                                   std::span<const ImageInfo> inputs) const override {
    return std::make_unique<NodeKernel>(inputs[0]);
  }

 private:
  std::string name_;
};

[[maybe_unused]] void register_clash_builtin(Registry& r) {
  r.add(std::make_shared<NamedOp>("gaussian"));
}
[[maybe_unused]] void register_two_ops_one_clash(Registry& r) {
  r.add(std::make_shared<NamedOp>("test.fresh"));
  r.add(std::make_shared<NamedOp>("example.invert"));
}
[[maybe_unused]] void register_throws(Registry&) {
  throw std::runtime_error("the plugin's own failure");
}
[[maybe_unused]] void register_nothing(Registry&) {}

}  // namespace

#if defined(TEST_PLUGIN_no_entry)
extern "C" __attribute__((visibility("default"))) int not_the_entry_point() { return 0; }
#elif defined(TEST_PLUGIN_abi_symbol)
// Built "for another ABI": the loader sees the version symbol and never calls in.
extern "C" __attribute__((visibility("default"))) const int cellflow_plugin_abi_version = 999;
extern "C" __attribute__((visibility("default"))) int cellflow_plugin_register(
    cellflow_plugin_host*, char*, size_t) {
  __builtin_trap();  // must not be called
}
#elif defined(TEST_PLUGIN_abi_tag)
// Built against other headers: same ABI version, another tag.
extern "C" __attribute__((visibility("default"))) const int cellflow_plugin_abi_version =
    CELLFLOW_PLUGIN_ABI_VERSION;
extern "C" __attribute__((visibility("default"))) const char cellflow_plugin_abi_tag[] =
    "0123456789abcdef";
extern "C" __attribute__((visibility("default"))) int cellflow_plugin_register(
    cellflow_plugin_host*, char*, size_t) {
  __builtin_trap();  // must not be called
}
#elif defined(TEST_PLUGIN_abi_entry)
// An entry point without the version symbol that finds the host's ABI wrong,
// as one built against another cellflow would.
extern "C" __attribute__((visibility("default"))) int cellflow_plugin_register(
    cellflow_plugin_host* host, char* error, size_t size) {
  std::snprintf(error, size, "the plugin was built for cellflow plugin ABI %d, the host has ABI %d",
                998, host->abi_version);
  return CELLFLOW_PLUGIN_ABI_MISMATCH;
}
#elif defined(TEST_PLUGIN_clash_builtin)
CELLFLOW_PLUGIN(register_clash_builtin)
#elif defined(TEST_PLUGIN_two_ops_one_clash)
CELLFLOW_PLUGIN(register_two_ops_one_clash)
#elif defined(TEST_PLUGIN_throws)
CELLFLOW_PLUGIN(register_throws)
#elif defined(TEST_PLUGIN_empty)
CELLFLOW_PLUGIN(register_nothing)
#else
#error "define one TEST_PLUGIN_* variant"
#endif
