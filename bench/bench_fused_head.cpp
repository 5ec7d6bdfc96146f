// bench_fused_head: one training step's output head + loss, fused (train/losses.h's fused_head_loss: the logits exist
// one chunk of rows at a time) next to today's unfused path (the [N, V] logits of student and teacher materialised,
// the loss and autograd over them), side by side in one run. Two objectives:
//   tvdpp  stage 3's (distill_objective: TVD++ with the default distill weights and CE), online teacher: the student's
//          hidden states [N, H] through its head [V, H], the teacher's [N, H'] through its own [V, H'];
//   ce     pretraining's next-token loss through the student's head.
// Per vocabulary and objective: median step time (forward + backward) and peak memory above the inputs (CUDA: the
// caching allocator's peak; CPU: the process's resident high-water mark), each case in a fresh child process so that
// no case's peak hides another's. CUDA: bf16 autocast over fp32 student weights, the teacher in bf16; CPU: fp32.
// Usage: bench_fused_head [--device auto] [--tokens N] [--hidden 768] [--teacher-hidden 2048]
//                         [--vocabs 49152,128256] [--iters 5] [--chunk-rows 0 (train/losses.h's choice)]
//                         [--out result.json]
// N defaults to 16384 on CUDA and 1024 on the CPU (the unfused step at N = 16k, V = 128k needs some 50 GB there).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#if DRAFTALIGN_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "bench/bench_args.h"
#include "train/losses.h"
#include "train/runtime.h"

using namespace draftalign;
using torch::Tensor;

namespace {

struct Case {
  std::string objective;  // tvdpp, ce
  bool fused = false;
  int64_t tokens = 0, hidden = 0, teacher_hidden = 0, vocab = 0, iters = 0;
  int64_t chunk_rows = 0;  // 0: head_chunk_rows
};

// The process's resident set now and at its high-water mark, in MiB (/proc/self/status).
std::pair<double, double> rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  double now = 0, peak = 0;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) now = std::stod(line.substr(6)) / 1024;
    if (line.rfind("VmHWM:", 0) == 0) peak = std::stod(line.substr(6)) / 1024;
  }
  return {now, peak};
}

void sync(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

// Runs one case in this (child) process: {"ms": median step ms, "peak_mib": peak above the inputs, "loss": value}.
nlohmann::json run_case(const Case& c, torch::Device device) {
  const bool cuda = device.is_cuda();
  const auto f32 = torch::TensorOptions().device(device).dtype(torch::kFloat32);
  const auto teacher_type = f32.dtype(cuda ? torch::kBFloat16 : torch::kFloat32);
  torch::manual_seed(0);
  const Tensor hidden = torch::randn({c.tokens, c.hidden}, f32).requires_grad_(true);
  const Tensor head = (torch::randn({c.vocab, c.hidden}, f32) * 0.05).requires_grad_(true);
  train::DistillRows rows;
  rows.student_hidden = hidden, rows.student_head = head;
  if (c.objective == "tvdpp") {
    rows.teacher_hidden = torch::randn({c.tokens, c.teacher_hidden}, teacher_type);
    rows.teacher_head = torch::randn({c.vocab, c.teacher_hidden}, teacher_type) * 0.05;
  }
  rows.targets = torch::randint(c.vocab, {c.tokens}, f32.dtype(torch::kInt64));
  const config::DistillSection d;
  const train::KdOptions kd = train::KdOptions::of(d);
  auto step = [&] {
    hidden.mutable_grad() = Tensor(), head.mutable_grad() = Tensor();
    train::AutocastGuard autocast(cuda);
    Tensor loss;
    if (c.objective == "tvdpp") {
      loss = train::distill_objective(rows, kd, d.loss, d.kd_weight, d.ce_weight, c.fused, c.chunk_rows).loss;
    } else if (c.fused) {
      const double count = static_cast<double>(c.tokens);
      const train::HeadScore score = [&](const Tensor& logits, int64_t begin, int64_t end) {
        return train::cross_entropy_chunk(logits, rows.targets.narrow(0, begin, end - begin), count);
      };
      loss = train::fused_head_loss(hidden, head, score, c.chunk_rows);
    } else {
      loss = torch::nn::functional::cross_entropy(torch::matmul(hidden, head.t()).to(torch::kFloat32), rows.targets);
    }
    loss.backward();
    return loss.item<double>();
  };
  sync(device);
  const double base_rss = rss_mib().first;
#if DRAFTALIGN_WITH_CUDA
  using c10::cuda::CUDACachingAllocator::getDeviceStats;
  const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  const int index = cuda ? device.index() : 0;
  int64_t base_cuda = 0;
  if (cuda) {
    base_cuda = getDeviceStats(index).allocated_bytes[agg].current;
    c10::cuda::CUDACachingAllocator::resetPeakStats(index);
  }
#endif
  const double value = step();  // the first step also sets the peak
  double peak = rss_mib().second - base_rss;
#if DRAFTALIGN_WITH_CUDA
  if (cuda) peak = static_cast<double>(getDeviceStats(index).allocated_bytes[agg].peak - base_cuda) / (1 << 20);
#endif
  std::vector<double> ms;
  for (int64_t i = 0; i < c.iters; ++i) {
    sync(device);
    const auto t0 = std::chrono::steady_clock::now();
    step();
    sync(device);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return {{"ms", ms[ms.size() / 2]}, {"peak_mib", peak}, {"loss", value}};
}

// run_case in a child process (the parent touches no tensor, so forking is safe); its JSON through a pipe.
nlohmann::json in_child(const Case& c, const std::string& device) {
  std::fflush(stdout);  // the child must not inherit (and print again) what is buffered
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string text;
    try {
      text = run_case(c, train::compute_device(device)).dump();
    } catch (const std::exception& e) {
      text = nlohmann::json{{"error", e.what()}}.dump();
    }
    const ssize_t wrote = write(fds[1], text.data(), text.size());
    _exit(wrote == static_cast<ssize_t>(text.size()) ? 0 : 1);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (text.empty()) return {{"error", "the child process died (out of memory?), status " + std::to_string(status)}};
  return nlohmann::json::parse(text);
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "auto", vocabs = "49152,128256", out;
  int64_t tokens = 0, hidden = 768, teacher_hidden = 2048, iters = 5, chunk_rows = 0;
  if (!bench::parse_options(argc, argv,
                            {{"--device", &device},
                             {"--tokens", &tokens},
                             {"--hidden", &hidden},
                             {"--teacher-hidden", &teacher_hidden},
                             {"--vocabs", &vocabs},
                             {"--iters", &iters},
                             {"--chunk-rows", &chunk_rows},
                             {"--out", &out}}))
    return 2;
  // Which device, asked in a child too: the parent stays free of CUDA and threads, so that it may fork.
  const bool cuda = [&] {
    std::fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) _exit(train::compute_device(device).is_cuda() ? 0 : 1);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }();
  if (tokens <= 0) tokens = cuda ? 16384 : 1024;
  std::printf("bench_fused_head: %s, N = %ld tokens, student hidden %ld, teacher hidden %ld, chunk rows %s%s\n",
              cuda ? "CUDA (bf16 autocast, teacher bf16)" : "CPU (fp32)", static_cast<long>(tokens),
              static_cast<long>(hidden), static_cast<long>(teacher_hidden),
              chunk_rows > 0 ? std::to_string(chunk_rows).c_str() : "auto", cuda ? "" : ", peak = resident high-water");
  std::printf("| vocab | objective | unfused ms | fused ms | time fused / unfused | unfused peak MiB | fused peak MiB | "
              "memory fused / unfused | loss unfused / fused |\n|---|---|---|---|---|---|---|---|---|\n");
  nlohmann::json rows = nlohmann::json::array();
  std::stringstream list(vocabs);
  for (std::string v; std::getline(list, v, ',');) {
    for (const char* objective : {"tvdpp", "ce"}) {
      Case c{objective, false, tokens, hidden, teacher_hidden, std::stoll(v), iters, chunk_rows};
      const nlohmann::json unfused = in_child(c, device);
      c.fused = true;
      const nlohmann::json fused = in_child(c, device);
      if (unfused.contains("error") || fused.contains("error")) {
        std::printf("| %s | %s | %s | %s |\n", v.c_str(), objective, unfused.dump().c_str(), fused.dump().c_str());
        rows.push_back({{"vocab", c.vocab}, {"objective", objective}, {"unfused", unfused}, {"fused", fused}});
        continue;
      }
      const double tu = unfused["ms"], tf = fused["ms"], mu = unfused["peak_mib"], mf = fused["peak_mib"];
      std::printf("| %s | %s | %.1f | %.1f | %.2f | %.0f | %.0f | %.3f | %.6f / %.6f |\n", v.c_str(), objective, tu, tf,
                  tf / tu, mu, mf, mf / mu, unfused["loss"].get<double>(), fused["loss"].get<double>());
      std::fflush(stdout);
      rows.push_back({{"vocab", c.vocab}, {"objective", objective}, {"unfused", unfused}, {"fused", fused},
                      {"time_ratio", tf / tu}, {"memory_ratio", mf / mu}});
    }
  }
  bench::write_result({{"device", cuda ? "cuda" : "cpu"},
                       {"tokens", tokens},
                       {"hidden", hidden},
                       {"chunk_rows", chunk_rows},
                       {"teacher_hidden", teacher_hidden},
                       {"rows", rows}},
                      out);
  return 0;
}
