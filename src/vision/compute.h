// Where vtprune's own graphs run (the ViT with taps, the projector, the timm classifier's tail, CLIP's text
// tower, the libmtmd taps' attention sums): one device (the CPU or an accelerator) plus the CPU, under one
// ggml scheduler, as libmtmd runs its clip graphs. Ops the device lacks run on the CPU; weights live in the
// device's memory.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "ggml_handles.h"

namespace vtprune::vision {

struct GgmlSchedDeleter {
  void operator()(ggml_backend_sched* sched) const { ggml_backend_sched_free(sched); }
};
using SchedPtr = std::unique_ptr<ggml_backend_sched, GgmlSchedDeleter>;

class Compute {
 public:
  // `device`: "cpu", "gpu" or a ggml device name (vtprune::resolve_device). `max_nodes`: the largest graph run.
  Compute(const std::string& device, size_t max_nodes);

  // Where weights go: the device's default buffer type.
  ggml_backend_buffer_type_t weight_buffer_type() const;
  // ggml's name of the device ("CPU", "Vulkan0", ...).
  std::string device_name() const;
  const std::string& choice() const { return choice_; }

  // Allocates `graph`, lets `set_inputs` fill its inputs (ggml_backend_tensor_set), and runs it with `threads`
  // CPU threads. Outputs stay readable (ggml_backend_tensor_get) until the next run. Throws Error naming `what`.
  void run(ggml_cgraph* graph, int threads, const std::function<void()>& set_inputs, const std::string& what);

  // Runs a graph allocated by an earlier run() again, with new input values (its topology unchanged).
  void rerun(ggml_cgraph* graph, const std::string& what);

 private:
  void make_scheduler();
  // What a graph's scratch needs depend on: every node's op and shape.
  static size_t shape_signature(const ggml_cgraph* graph);

  std::string choice_;
  ggml_backend_dev_t device_dev_ = nullptr;  // the accelerator, when there is one
  size_t last_signature_ = 0;
  BackendPtr device_;  // null when the device is the CPU
  BackendPtr cpu_;
  SchedPtr sched_;
  void (*set_n_threads_)(ggml_backend_t, int) = nullptr;
  size_t max_nodes_ = 0;
};

}  // namespace vtprune::vision
