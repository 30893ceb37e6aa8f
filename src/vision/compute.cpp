#include "compute.h"

#include <vector>

#include "vtprune/devices.h"
#include "vtprune/reduce.h"

namespace vtprune::vision {

Compute::Compute(const std::string& device, size_t max_nodes) : choice_(device), max_nodes_(max_nodes) {
  ggml_backend_dev_t dev = resolve_device(device);
  cpu_.reset(ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr));
  if (!cpu_) throw Error("could not initialise ggml's CPU backend");
  if (ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU) device_dev_ = dev;
  // The CPU backend's thread count is set through its registry entry: the same call in static builds and in
  // GGML_BACKEND_DL builds, where libggml-cpu is a module vtprune does not link.
  ggml_backend_reg_t cpu_reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(cpu_.get()));
  set_n_threads_ = reinterpret_cast<void (*)(ggml_backend_t, int)>(ggml_backend_reg_get_proc_address(cpu_reg, "ggml_backend_set_n_threads"));
  make_scheduler();
}

void Compute::make_scheduler() {
  sched_.reset();
  if (device_dev_ != nullptr) {
    device_.reset(ggml_backend_dev_init(device_dev_, nullptr));
    if (!device_) throw Error(std::string("could not initialise ggml's ") + ggml_backend_dev_name(device_dev_) + " backend");
  }
  std::vector<ggml_backend_t> backends;
  if (device_) backends.push_back(device_.get());
  backends.push_back(cpu_.get());  // the scheduler's last backend must be the CPU
  std::vector<ggml_backend_buffer_type_t> types;
  for (ggml_backend_t b : backends) types.push_back(ggml_backend_get_default_buffer_type(b));
  sched_.reset(ggml_backend_sched_new(backends.data(), types.data(), static_cast<int>(backends.size()), max_nodes_,
                                      /*parallel=*/false, /*op_offload=*/true));
  if (!sched_) throw Error("could not create ggml's scheduler for the " + device_name() + " device");
}

size_t Compute::shape_signature(const ggml_cgraph* graph) {
  size_t h = 0;
  const auto mix = [&h](size_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
  // ggml_graph_n_nodes / ggml_graph_node take a non-const graph but do not change it
  auto* g = const_cast<ggml_cgraph*>(graph);
  for (int i = 0; i < ggml_graph_n_nodes(g); ++i) {
    const ggml_tensor* t = ggml_graph_node(g, i);
    mix(static_cast<size_t>(t->op));
    for (int d = 0; d < GGML_MAX_DIMS; ++d) mix(static_cast<size_t>(t->ne[d]));
  }
  return h;
}

ggml_backend_buffer_type_t Compute::weight_buffer_type() const {
  return ggml_backend_get_default_buffer_type(device_ ? device_.get() : cpu_.get());
}

std::string Compute::device_name() const {
  return ggml_backend_dev_name(ggml_backend_get_device(device_ ? device_.get() : cpu_.get()));
}

void Compute::run(ggml_cgraph* graph, int threads, const std::function<void()>& set_inputs, const std::string& what) {
  // ggml-vulkan at the pinned commit corrupts the heap when one backend, after a graph, runs a differently
  // shaped graph (seen on Mesa's lavapipe 22.3: intermittent crashes inside the driver when the LLaVA encoder
  // without taps is followed by one that materialises a tapped layer's softmax; none in 17 runs with a fresh
  // backend per graph). So an accelerator's backend is made anew whenever the graph's shapes change: its
  // pipelines and the weights live on the device, not in the backend. The CPU's is kept.
  if (device_dev_ != nullptr) {
    const size_t signature = shape_signature(graph);
    if (last_signature_ != 0 && signature != last_signature_) make_scheduler();
    last_signature_ = signature;
  }
  if (set_n_threads_ != nullptr) set_n_threads_(cpu_.get(), threads);
  ggml_backend_sched_reset(sched_.get());
  if (!ggml_backend_sched_alloc_graph(sched_.get(), graph)) {
    throw Error(what + ": could not allocate the graph on " + device_name());
  }
  set_inputs();
  rerun(graph, what);
}

void Compute::rerun(ggml_cgraph* graph, const std::string& what) {
  if (ggml_backend_sched_graph_compute(sched_.get(), graph) != GGML_STATUS_SUCCESS) {
    throw Error(what + ": graph compute failed on " + device_name());
  }
}

}  // namespace vtprune::vision
