// test.volume: a source op serving a volume the test built in memory, cut
// into any cell shape, so that ops can be checked on hand-made images
// (snakes, rings, diagonal contacts). Volumes are registered under a key that
// includes a hash of their bytes, so equal keys always mean equal data even
// though node images are interned process-wide. Thread-safe.
#pragma once

#include <fmt/format.h>

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/op.hpp"
#include "cellflow/graph/registry.hpp"
#include "graph/test_ops.hpp"

namespace cellflow::test {

class Volumes {
 public:
  static Volumes& global() {
    static Volumes v;
    return v;
  }
  /// Registers `data` and returns its key: `name` plus a hash of the bytes.
  std::string add(const std::string& name, const CellBuffer& data) {
    const std::string_view bytes(reinterpret_cast<const char*>(data.data()), data.num_bytes());
    std::string key = fmt::format("{}-{}-{}-{:x}", name, dtype_name(data.dtype()),
                                  data.shape().str(), std::hash<std::string_view>{}(bytes));
    std::lock_guard lock(mu_);
    volumes_[key] = data;
    return key;
  }
  CellBuffer get(const std::string& key) const {
    std::lock_guard lock(mu_);
    const auto it = volumes_.find(key);
    if (it == volumes_.end())
      throw InvalidArgument(fmt::format("param \"key\": no volume \"{}\"", key));
    return it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, CellBuffer> volumes_;
};

class VolumeKernel final : public NodeKernel {
 public:
  VolumeKernel(ImageInfo info, CellBuffer data)
      : NodeKernel(std::move(info)), data_(std::move(data)) {}
  void compute(const Box& out_box, std::span<const InputRegion>, CellBuffer& out) const override {
    copy_region(data_.data(), Box::from_shape(data_.shape()), out.mutable_data(), out_box, out_box,
                dtype_size(data_.dtype()));
  }

 private:
  CellBuffer data_;
};

class VolumeOp final : public Op {
 public:
  std::string_view name() const override { return "test.volume"; }
  int version() const override { return 1; }
  std::string_view doc() const override { return "a volume registered by the test"; }
  std::vector<ParamSpec> params() const override {
    return {{"key", ParamType::kString, Value(), "Volumes key", true},
            {"cell_shape", ParamType::kIntList, Value(), "cell shape", true}};
  }
  int min_inputs() const override { return 0; }
  std::unique_ptr<NodeKernel> bind(const Params& p, std::span<const ImageInfo>) const override {
    CellBuffer data = Volumes::global().get(p.get_string("key"));
    ImageInfo info{data.dtype(), data.shape(), Shape::from(p.get_ints("cell_shape"))};
    return std::make_unique<VolumeKernel>(info, std::move(data));
  }
};

/// The test registry (built-ins and graph test ops) plus test.volume.
inline std::unique_ptr<Registry> make_volume_registry() {
  auto r = make_test_registry();
  r->add(std::make_shared<VolumeOp>());
  return r;
}

/// Params of a test.volume node.
inline Value volume_params(const std::string& key, const Shape& cell_shape) {
  Value::Array cs;
  for (int64_t v : cell_shape) cs.emplace_back(v);
  return Value(Value::Object{{"key", key}, {"cell_shape", Value(std::move(cs))}});
}

}  // namespace cellflow::test
