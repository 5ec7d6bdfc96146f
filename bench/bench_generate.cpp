// bench_generate: decoding throughput of our continuous-batching generator on a Hugging Face checkpoint, greedy, on
// the first n prompts of a prompt file rendered with the model's chat template. bench/generate_vs_hf.py runs it next
// to transformers' generate on the same prompts; run it through that script.
// Usage: bench_generate --model DIR --prompts FILE [--n 16] [--batch 16] [--max-new 32] [--device cpu|cuda]
//                       [--share-prefix 1|0] [--out result.json]
// Writes JSON: tokens generated, seconds (model loading and a warm-up excluded), tokens/s, every response's tokens.
#include <chrono>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "bench/bench_args.h"
#include "train/runtime.h"
#include "common/fs.h"
#include "data/prompts.h"
#include "model/generation.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

using namespace draftalign;

int main(int argc, char** argv) {
  std::string model_dir, prompts_file, device_name = "cpu", out;
  int64_t n = 16, batch = 16, max_new = 32, share_prefix = 1;
  if (!bench::parse_options(argc, argv,
                            {{"--model", &model_dir},
                             {"--prompts", &prompts_file},
                             {"--n", &n},
                             {"--batch", &batch},
                             {"--max-new", &max_new},
                             {"--device", &device_name},
                             {"--share-prefix", &share_prefix},
                             {"--out", &out}}))
    return 2;
  try {
    const torch::Device device = train::compute_device(device_name);
    const bool cuda = device.is_cuda();
    auto model = model::load_llama(model_dir, device, train::pick_dtype(config::Dtype::kAuto, device));
    model->eval();
    const auto tokenizer = tok::load_tokenizer(model_dir);
    const auto chat = tok::ChatTemplate::from_dir(model_dir);
    const auto prompts = data::load_prompts({prompts_file}, false, n);
    std::vector<model::Request> requests;
    for (const auto& p : prompts.prompts)
      requests.push_back({p.index, tokenizer->encode(chat.render(p.messages)), 0});
    model::SamplingParams sp;
    sp.temperature = 0, sp.max_new_tokens = max_new, sp.stop_ids = {tokenizer->special().eos};
    model::Generator gen(*model, sp, batch);
    gen.set_prefix_sharing(share_prefix != 0);
    model::SamplingParams warm = sp;
    warm.max_new_tokens = 4;
    model::Generator(*model, warm, batch).run({requests.begin(), requests.begin() + 1});  // warm-up
    auto sync = [&] {
      if (cuda) model->forward(torch::zeros({1, 1}, torch::kInt64).to(device)).cpu();  // drains the stream
    };
    sync();
    const auto t0 = std::chrono::steady_clock::now();
    const auto done = gen.run(requests);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int64_t tokens = 0;
    nlohmann::json responses = nlohmann::json::array();
    for (const auto& c : done) tokens += static_cast<int64_t>(c.tokens.size()), responses.push_back(c.tokens);
    const nlohmann::json j = {{"impl", "draftalign (continuous batching)"},
                              {"device", device.str()},
                              {"dtype", cuda ? "bf16" : "fp32"},
                              {"threads", torch::get_num_threads()},
                              {"n", requests.size()},
                              {"batch", batch},
                              {"max_new", max_new},
                              {"shared_prefix", gen.shared_prefix()},
                              {"tokens", tokens},
                              {"seconds", secs},
                              {"tokens_per_s", tokens / secs},
                              {"responses", responses}};
    bench::write_result(j, out);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
