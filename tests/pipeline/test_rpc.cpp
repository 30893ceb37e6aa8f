// ggml's RPC backend: llama.cpp's rpc-server (built from the same pinned source) on loopback holds every LLM
// layer (-ngl 99, --rpc 127.0.0.1:PORT), or runs vtprune's own graphs (--mmproj-offload: the RPC device is then
// the "gpu" of a CPU-only build), and the pipeline answers as the local CPU run does. An RPC device is a real
// non-host device to ggml's scheduler (weights and activations live in the server's memory, every input and
// output crosses the socket), so it proves the own graphs' device path in every CI run. Built when the RPC
// backend is (VTPRUNE_RPC, on by default).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <cmath>
#include <thread>

#include "device_checks.h"
#include "test_pair.h"
#include "vtprune/devices.h"

extern char** environ;

namespace vtprune::pipeline {
namespace {

bool port_accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

// ggml-rpc-server -H 127.0.0.1 -p PORT as a child process, killed when the object goes.
class RpcServer {
 public:
  explicit RpcServer(int port) : port_(port) {
    const std::string bin = VTPRUNE_RPC_SERVER, port_text = std::to_string(port);
    std::vector<std::string> args{bin, "-H", "127.0.0.1", "-p", port_text, "-t", "1"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t io;
    posix_spawn_file_actions_init(&io);
    posix_spawn_file_actions_addopen(&io, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&io, 1, 2);
    if (posix_spawn(&pid_, bin.c_str(), &io, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&io);
  }
  ~RpcServer() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  bool wait_ready() const {
    for (int i = 0; i < 100 && pid_ > 0; ++i) {
      if (port_accepts(port_)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string log() const {
    std::ifstream in(log_);
    return {std::istreambuf_iterator<char>(in), {}};
  }

 private:
  int port_;
  std::filesystem::path log_ = test::temp_dir("rpc-server") / "log.txt";
  pid_t pid_ = -1;
};

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// One rpc-server for the whole process: ggml's device registry is process-wide and keeps a registered server's
// device for good (a later model load asks every device for its memory, and ggml's client aborts when the
// server is gone), so the server must outlive every test that registers it.
const RpcServer& loopback_server() {
  static const RpcServer server(free_port());
  return server;
}

TEST(Rpc, LlmOnLoopbackRpcServerAnswersAsTheLocalRun) {
  std::string log;
  const auto pair = test::TestPair::make("tiny", &log);
  ASSERT_NE(pair, nullptr) << log;
  const RpcServer& server = loopback_server();
  ASSERT_TRUE(server.wait_ready()) << "ggml-rpc-server did not start (" << VTPRUNE_RPC_SERVER << ")";

  VlmParams p;
  p.llm_path = (pair->dir / "llm.gguf").string();
  p.mmproj_path = (pair->dir / "mmproj.gguf").string();
  p.threads = 1;
  p.n_ctx = 2048;
  p.rpc_servers = {server.endpoint()};
  p.n_gpu_layers = 99;
  Vlm remote(p);
  // the server holds the layers: it was connected to and allocated the model's buffers
  EXPECT_NE(server.log().find("Accepted client connection"), std::string::npos) << server.log();

  for (const auto& [method, budget] : std::vector<std::pair<std::string, Budget>>{{"none", Budget::all()}, {"hiprune", Budget::tokens(64)}}) {
    SCOPED_TRACE(method);
    Request r;
    r.images.push_back(pair->image);
    r.prompt = "What is in the image?";
    r.method = method;
    r.budget = budget;
    r.sampling.max_tokens = 8;
    // The same CPU kernels run the same graph on the server; only how ggml splits it (and the F16 rounding that
    // depends on it) may differ: 5e-3 of the largest logit, as for batch splits.
    test::expect_answers_like(*pair->vlm, remote, r, 5e-3f);
  }
}

// An endpoint nobody listens on, or not host:port, is one clear error (ggml's RPC client itself would abort).
TEST(Rpc, UnreachableOrMalformedEndpointIsAnInputError) {
  std::string log;
  const auto dir = test::temp_dir("rpc-bad");
  ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " make-test-model --shape tiny --out " + dir.string(), &log), 0) << log;
  VlmParams p;
  p.llm_path = (dir / "llm.gguf").string();
  p.mmproj_path = (dir / "mmproj.gguf").string();
  p.n_gpu_layers = 99;
  for (const std::string& endpoint : {"127.0.0.1:" + std::to_string(free_port()), std::string("localhost"), std::string("h:x1")}) {
    p.rpc_servers = {endpoint};
    try {
      Vlm vlm(p);
      ADD_FAILURE() << endpoint << " was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(endpoint), std::string::npos) << e.what();
    }
  }
}

// The RPC server's ggml device name for `endpoint` (registered first).
std::string rpc_device(const std::string& endpoint) {
  add_rpc_servers({endpoint});
  for (const DeviceInfo& d : list_devices()) {
    if (d.description == endpoint) return d.name;
  }
  ADD_FAILURE() << "no device for " << endpoint;
  return "cpu";
}

// The server computes with the same CPU kernels as this process; only ggml's graph splits (and the thread count
// of each piece) differ, so values agree to float rounding: 1e-4 of each tensor's largest value.
constexpr float kSameKernelsTolerance = 1e-4f;

TEST(Rpc, OwnGraphsOnLoopbackRpcDeviceEqualTheCpu) {
  std::string log;
  const auto pair = test::TestPair::make("tiny", &log);
  ASSERT_NE(pair, nullptr) << log;
  const RpcServer& server = loopback_server();
  ASSERT_TRUE(server.wait_ready()) << "ggml-rpc-server did not start (" << VTPRUNE_RPC_SERVER << ")";
  const std::string device = rpc_device(server.endpoint());
  ASSERT_EQ(device.rfind("RPC", 0), 0u) << device;
  {
    SCOPED_TRACE("encoder");
    test::expect_encoder_equals_cpu(pair->dir, device, kSameKernelsTolerance);
  }
  {
    SCOPED_TRACE("CLIP text");
    test::expect_clip_text_equals_cpu(pair->dir, device, kSameKernelsTolerance);
  }
  if (!test::shared_dir().empty() && std::filesystem::exists(test::shared_dir() / "models" / "deit-tiny")) {
    SCOPED_TRACE("DeiT");
    test::expect_deit_equals_cpu(device, kSameKernelsTolerance);
  }
  EXPECT_NE(server.log().find("Accepted client connection"), std::string::npos) << server.log();
}

// --mmproj-offload with --rpc in a build without a GPU: vtprune's LLaVA graph (taps, projector) runs on the RPC
// device, the LLM stays local, and every method answers as the all-CPU run does.
TEST(Rpc, MmprojOffloadRunsTheOwnGraphOnTheRpcDevice) {
  std::string log;
  const auto pair = test::TestPair::make("tiny", &log);
  ASSERT_NE(pair, nullptr) << log;
  const RpcServer& server = loopback_server();
  ASSERT_TRUE(server.wait_ready()) << "ggml-rpc-server did not start (" << VTPRUNE_RPC_SERVER << ")";
  VlmParams p = test::TestPair::params(pair->dir);
  p.rpc_servers = {server.endpoint()};
  p.vision_gpu = true;
  Vlm offloaded(p);
  const std::string expected = resolved_device_name("gpu");
  EXPECT_EQ(offloaded.vision_model().device_name(), expected);
  if (expected.rfind("RPC", 0) != 0) GTEST_SKIP() << "this build has a GPU (" << expected << "): test_pipeline_gpu covers it";
  for (const MethodInfo& m : methods()) {
    SCOPED_TRACE(m.name);
    test::expect_answers_like(*pair->vlm, offloaded, test::device_request(*pair, m.name), 5e-3f);
  }
}

}  // namespace
}  // namespace vtprune::pipeline
