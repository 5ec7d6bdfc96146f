// bench_distill_step: one online distillation micro-batch (teacher forward without gradients, student forward, KD loss,
// backward) two ways, side by side: the output head over every row then the response rows selected (all rows), and
// the response rows of the final hidden states selected before the head (response rows, what distill does). Rows are
// random tokens; the first --prompt-percent of each sequence is prompt, the rest response.
// Usage: bench_distill_step --student DIR --target DIR [--batch 4] [--seq 192] [--prompt-percent 50] [--steps 5]
//                           [--loss fkl] [--device cpu|cuda] [--out result.json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_args.h"
#include "train/runtime.h"
#include "model/llama.h"
#include "train/losses.h"

using namespace draftalign;
using torch::Tensor;

int main(int argc, char** argv) {
  std::string student_dir, target_dir, device_name = "cpu", loss = "fkl", out;
  int64_t batch = 4, seq = 192, prompt_percent = 50, steps = 5;
  if (!bench::parse_options(argc, argv, {{"--student", &student_dir}, {"--target", &target_dir}, {"--batch", &batch},
                                          {"--seq", &seq}, {"--prompt-percent", &prompt_percent}, {"--steps", &steps},
                                          {"--loss", &loss}, {"--device", &device_name}, {"--out", &out}}))
    return 2;
  try {
    const torch::Device device = train::compute_device(device_name);
    const bool cuda = device.is_cuda();
    auto student = model::load_llama(student_dir, device, torch::kFloat32);
    auto target = model::load_llama(target_dir, device, train::pick_dtype(config::Dtype::kAuto, device));
    target->eval();
    for (auto& p : target->parameters()) p.set_requires_grad(false);
    torch::manual_seed(0);
    const int64_t vocab = student->config().vocab_size, prompt = seq * prompt_percent / 100;
    const Tensor x = torch::randint(0, vocab, {batch, seq}, torch::TensorOptions().dtype(torch::kInt64).device(device));
    std::vector<int64_t> rows;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t t = prompt; t < seq; ++t) rows.push_back(b * seq + t);
    const Tensor positions = torch::tensor(rows, torch::kInt64).to(device);
    train::KdOptions o;
    o.loss = config::enum_from<config::Loss>(loss, "--loss");
    auto select = [&](const Tensor& h) { return h.reshape({-1, h.size(-1)}).index_select(0, positions); };
    auto step = [&](bool response_only) {
      Tensor t, s;
      {
        torch::NoGradGuard no_grad;
        t = response_only ? target->logits(select(target->hidden(x))) : select(target->forward(x));
      }
      s = response_only ? student->logits(select(student->hidden(x))) : select(student->forward(x));
      train::kd_loss(s, t, o).backward();
      student->zero_grad();
      if (cuda) torch::cuda::synchronize();
    };
    auto median_seconds = [&](bool response_only) {
      step(response_only);  // warm-up
      std::vector<double> times;
      for (int64_t i = 0; i < steps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        step(response_only);
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(times.begin(), times.end());
      return times[times.size() / 2];
    };
    // Alternated, so that both see the same machine load.
    const double all_rows = median_seconds(false), response_rows = median_seconds(true);
    std::printf("| micro-batch (%ld x %ld tokens, %ld%% prompt, %s) | median seconds |\n|---|---:|\n",
                static_cast<long>(batch), static_cast<long>(seq), static_cast<long>(prompt_percent), loss.c_str());
    std::printf("| output head over all rows, then select | %.3f |\n", all_rows);
    std::printf("| select response rows, then output head | %.3f |\n", response_rows);
    std::printf("speed-up %.2fx\n", all_rows / response_rows);
    bench::write_result({{"device", device_name}, {"batch", batch}, {"seq", seq}, {"prompt_percent", prompt_percent},
                         {"loss", loss}, {"all_rows_s", all_rows}, {"response_rows_s", response_rows},
                         {"speedup", all_rows / response_rows}},
                        out);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_distill_step: %s\n", e.what());
    return 1;
  }
}
