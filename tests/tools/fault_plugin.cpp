// A plugin of misbehaving ops for the CLI's fault tests (retries, timeouts,
// --isolate): fault.inject copies its input, except that chosen cells throw,
// crash (SIGSEGV), hang (sleep, deaf to cancellation) or run slowly while
// checking for cancellation, on their first `times` attempts. Attempts are
// counted in files under `state_dir` so that the count survives worker
// processes. fault.blocks (for `cellflow blockwise`) sums each voxel's
// 3x3(x3...) neighbourhood of an f32 input (zero outside it), so it needs a
// context of 1; output boxes that begin at a listed position crash or hang
// on every attempt.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/cancel.hpp"
#include "cellflow/plugins/plugin.hpp"

namespace {

using namespace cellflow;

enum class Mode { kThrow, kSegfault, kHang, kSlow };

class InjectKernel final : public NodeKernel {
 public:
  InjectKernel(ImageInfo info, Mode mode, int64_t times, std::vector<int64_t> cell,
               std::string state_dir, double seconds)
      : NodeKernel(std::move(info)),
        mode_(mode),
        times_(times),
        cell_(std::move(cell)),
        state_dir_(std::move(state_dir)),
        seconds_(seconds) {}

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    if (misbehaves(out_box)) {
      switch (mode_) {
        case Mode::kThrow:
          throw std::runtime_error("injected failure");
        case Mode::kSegfault:
          std::raise(SIGSEGV);
          break;
        case Mode::kHang:
          std::this_thread::sleep_for(std::chrono::duration<double>(seconds_));
          break;
        case Mode::kSlow: {
          const auto end =
              std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds_);
          while (std::chrono::steady_clock::now() < end) {
            check_cancelled();
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
          break;
        }
      }
    }
    std::memcpy(out.mutable_data(), inputs[0].data.data(), out.num_bytes());
  }

 private:
  bool misbehaves(const Box& box) const {
    const Shape& cells = output().cell_shape;
    std::string name;
    for (int d = 0; d < box.rank(); ++d) {
      const int64_t index = box.begin()[d] / cells[d];
      if (!cell_.empty() && cell_[static_cast<size_t>(d)] != index) return false;
      name += (d == 0 ? "" : "_") + std::to_string(index);
    }
    if (times_ < 0) return true;
    // This attempt's number: one byte appended per attempt.
    const std::string file = state_dir_ + "/" + name;
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw IoError("fault.inject: cannot open " + file);
    const char one = '1';
    const bool wrote = ::write(fd, &one, 1) == 1;
    struct stat st {};
    ::fstat(fd, &st);
    ::close(fd);
    if (!wrote) throw IoError("fault.inject: cannot write " + file);
    return st.st_size <= times_;
  }

  Mode mode_;
  int64_t times_;
  std::vector<int64_t> cell_;
  std::string state_dir_;
  double seconds_;
};

class InjectOp final : public Op {
 public:
  std::string_view name() const override { return "fault.inject"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Test op: copies its input; chosen cells throw, crash, hang or run slowly.";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"mode", ParamType::kString, Value("throw"), "throw, segfault, hang or slow"},
        {"times", ParamType::kInt, Value(1), "attempts per cell that misbehave (-1: all)"},
        {"cell", ParamType::kIntList, Value(), "the one cell that misbehaves (default: all)"},
        {"state_dir", ParamType::kString, Value(""), "folder counting attempts"},
        {"seconds", ParamType::kFloat, Value(3600.0), "how long hang and slow take"},
    };
  }
  int min_inputs() const override { return 1; }
  std::unique_ptr<NodeKernel> bind(const Params& p,
                                   std::span<const ImageInfo> inputs) const override {
    const std::string& m = p.get_string("mode");
    Mode mode = Mode::kThrow;
    if (m == "segfault") {
      mode = Mode::kSegfault;
    } else if (m == "hang") {
      mode = Mode::kHang;
    } else if (m == "slow") {
      mode = Mode::kSlow;
    } else if (m != "throw") {
      throw InvalidArgument("param \"mode\" must be throw, segfault, hang or slow (got \"" + m +
                            "\")");
    }
    std::vector<int64_t> cell;
    if (const Value* c = p.value().find("cell"); c != nullptr && c->is_array()) {
      cell = p.get_ints("cell");
    }
    if (!cell.empty() && static_cast<int>(cell.size()) != inputs[0].shape.rank())
      throw InvalidArgument("param \"cell\" must have one index per axis");
    if (p.get_int("times") >= 0 && p.get_string("state_dir").empty())
      throw InvalidArgument("param \"state_dir\" is required unless \"times\" is -1");
    return std::make_unique<InjectKernel>(inputs[0], mode, p.get_int("times"), std::move(cell),
                                          p.get_string("state_dir"), p.get_float("seconds"));
  }
};

class NeighbourSumKernel final : public NodeKernel {
 public:
  NeighbourSumKernel(ImageInfo info, std::vector<int64_t> segfault_at, std::vector<int64_t> hang_at)
      : NodeKernel(std::move(info)),
        segfault_at_(std::move(segfault_at)),
        hang_at_(std::move(hang_at)) {}

  Box input_region(size_t, const Box& out_box, const ImageInfo& input) const override {
    return out_box.grow(Dims(out_box.rank(), 1)).intersect(Box::from_shape(input.shape));
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    if (listed(segfault_at_, out_box)) std::raise(SIGSEGV);
    if (listed(hang_at_, out_box)) {
      while (true) std::this_thread::sleep_for(std::chrono::seconds(1));  // deaf to cancellation
    }
    const InputRegion& in = inputs[0];
    const float* src = in.data.as<float>();
    float* dst = out.mutable_as<float>();
    const Shape in_shape = in.box.shape();
    int64_t k = 0;
    for_each_index(out_box, [&](const Dims& p) {
      float sum = 0;
      for_each_index(Box(Dims(p.rank(), -1), Dims(p.rank(), 2)), [&](const Dims& off) {
        int64_t linear = 0;
        for (int d = 0; d < p.rank(); ++d) {
          const int64_t x = p[d] + off[d];
          if (x < in.box.begin()[d] || x >= in.box.end()[d]) return;  // outside: zero
          linear = linear * in_shape[d] + (x - in.box.begin()[d]);
        }
        sum += src[linear];
      });
      dst[k++] = sum;
    });
  }

 private:
  static bool listed(const std::vector<int64_t>& at, const Box& box) {
    const size_t rank = static_cast<size_t>(box.rank());
    for (size_t i = 0; i + rank <= at.size(); i += rank) {
      if (std::equal(at.begin() + static_cast<ptrdiff_t>(i),
                     at.begin() + static_cast<ptrdiff_t>(i + rank), box.begin().begin()))
        return true;
    }
    return false;
  }
  std::vector<int64_t> segfault_at_, hang_at_;
};

class NeighbourSumOp final : public Op {
 public:
  std::string_view name() const override { return "fault.blocks"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Test op: sums each voxel's neighbourhood; chosen output boxes crash or hang.";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"segfault_at", ParamType::kIntList, Value::array(),
         "begins of output boxes that crash, one after the other (rank entries each)"},
        {"hang_at", ParamType::kIntList, Value::array(), "begins of output boxes that hang"},
    };
  }
  int min_inputs() const override { return 1; }
  std::unique_ptr<NodeKernel> bind(const Params& p,
                                   std::span<const ImageInfo> inputs) const override {
    if (inputs[0].dtype != DType::kF32)
      throw InvalidArgument("fault.blocks: the input must be f32");
    return std::make_unique<NeighbourSumKernel>(inputs[0], p.get_ints("segfault_at"),
                                                p.get_ints("hang_at"));
  }
};

void register_ops(Registry& registry) {
  registry.add(std::make_shared<InjectOp>());
  registry.add(std::make_shared<NeighbourSumOp>());
}

}  // namespace

CELLFLOW_PLUGIN(register_ops)
