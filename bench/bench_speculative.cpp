// bench_speculative: the cost model of speculative decoding on this device. Times (median of --steps) one decode step
// of the target appending 1 .. --max-block tokens to a cache holding a chat-templated prompt (block gamma + 1 is the
// verification of a gamma-token draft) and one single-token step of the drafter, then prints the predicted cost of a
// speculative step against plain decoding: speed-up(g, tau) = tau * t_target(1) / (g * t_drafter + t_target(g + 1)).
// On a memory-bound GPU t_target(g + 1) ~ t_target(1); on a CPU it grows with g.
// Usage: bench_speculative --target DIR --drafter DIR [--prompt TEXT] [--max-block 7] [--steps 16]
//                          [--device cpu|cuda] [--out result.json]
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "bench/bench_args.h"
#include "train/runtime.h"
#include "evaluators/metrics.h"
#include "evaluators/speculative.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

using namespace draftalign;

int main(int argc, char** argv) {
  std::string target_dir, drafter_dir, device_name = "cpu", out;
  std::string prompt = "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural "
                       "experiences and must-see attractions.";
  int64_t max_block = 7, steps = 16;
  if (!bench::parse_options(argc, argv, {{"--target", &target_dir}, {"--drafter", &drafter_dir},
                                          {"--prompt", &prompt}, {"--max-block", &max_block}, {"--steps", &steps},
                                          {"--device", &device_name}, {"--out", &out}}))
    return 2;
  try {
    const torch::Device device = train::compute_device(device_name);
    const bool cuda = device.is_cuda();
    const torch::ScalarType dtype = train::pick_dtype(config::Dtype::kAuto, device);
    auto target = model::load_llama(target_dir, device, dtype);
    auto drafter = model::load_llama(drafter_dir, device, dtype);
    target->eval(), drafter->eval();
    const auto tokenizer = tok::load_tokenizer(target_dir);
    const auto context = tokenizer->encode(tok::ChatTemplate::from_dir(target_dir).render({{"user", prompt}}));
    const double drafter_s = eval::decode_step_seconds(*drafter, context, 1, steps);
    std::vector<double> target_s;
    for (int64_t b = 1; b <= max_block; ++b) target_s.push_back(eval::decode_step_seconds(*target, context, b, steps));
    // The plain step's two CPU forms side by side, alternated: one row padded to two (the default) and the GEMV.
    std::vector<double> padded, gemv;
    for (int r = 0; r < 3; ++r) {
      model::set_cpu_pad_single_row(false);
      gemv.push_back(eval::decode_step_seconds(*target, context, 1, steps));
      model::set_cpu_pad_single_row(true);
      padded.push_back(eval::decode_step_seconds(*target, context, 1, steps));
    }
    const double padded_s = eval::median(padded), gemv_s = eval::median(gemv);
    std::printf("device %s, %s, context %zu tokens; target %lld params, drafter %lld params\n", device.str().c_str(),
                cuda ? "bf16" : "fp32", context.size(), static_cast<long long>(target->num_params()),
                static_cast<long long>(drafter->num_params()));
    std::printf("plain target step (1 token), median of 3 alternated: %.2f ms padded to two rows, %.2f ms as one row "
                "(%.2fx)\n", padded_s * 1e3, gemv_s * 1e3, gemv_s / padded_s);
    std::printf("drafter step: %.2f ms\n\n| tokens appended | target step ms | vs 1 token | spec. step ms (g = n - 1) "
                "| tau needed to break even |\n|---:|---:|---:|---:|---:|\n", drafter_s * 1e3);
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t b = 1; b <= max_block; ++b) {
      const double t = target_s[b - 1], step = (b - 1) * drafter_s + t;
      std::printf("| %lld | %.2f | %.2fx | %.2f | %.2f |\n", static_cast<long long>(b), t * 1e3, t / target_s[0],
                  step * 1e3, step / target_s[0]);
      rows.push_back({{"block", b}, {"target_s", t}, {"spec_step_s", step}, {"break_even_tau", step / target_s[0]}});
    }
    bench::write_result({{"device", device.str()}, {"dtype", cuda ? "bf16" : "fp32"}, {"context", context.size()},
                         {"drafter_step_s", drafter_s}, {"rows", rows},
                         {"plain_step_padded_s", padded_s}, {"plain_step_one_row_s", gemv_s}},
                        out);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
