#include "train/checkpoint.h"

#include <algorithm>
#include <fstream>

#include "common/checksum.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "data/shards.h"
#include "io/hf_config.h"

namespace draftalign::train {
namespace {

using json = nlohmann::json;

constexpr const char* kCheckpointFiles[] = {"model.safetensors", "optimizer.pt", "rng.pt"};

// This rank's generator states: the CPU one, and the CUDA one of the current device when training on CUDA.
std::vector<torch::Tensor> generator_states(torch::Device device) {
  std::vector<torch::Tensor> out = {at::detail::getDefaultCPUGenerator().get_state()};
  if (device.is_cuda()) out.push_back(at::globalContext().defaultGenerator(device).get_state());
  return out;
}

}  // namespace

stdfs::path checkpoint_dir(const stdfs::path& output_dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%07lld", static_cast<long long>(step));
  return output_dir / kCheckpointsDir / name;
}

int64_t checkpoint_step(const stdfs::path& dir) {
  std::string name = dir.filename().string();
  if (name.empty()) name = dir.parent_path().filename().string();  // "…/step-0000500/"
  if (name.size() != 12 || name.rfind("step-", 0) != 0 ||
      name.find_first_not_of("0123456789", 5) != std::string::npos)
    return -1;
  return std::stoll(name.substr(5));
}

namespace {

std::vector<std::pair<int64_t, stdfs::path>> list_checkpoints(const stdfs::path& output_dir) {
  std::vector<std::pair<int64_t, stdfs::path>> out;
  const stdfs::path root = output_dir / kCheckpointsDir;
  if (!stdfs::is_directory(root)) return out;
  for (const auto& e : stdfs::directory_iterator(root)) {
    const int64_t step = checkpoint_step(e.path());
    if (step >= 0 && stdfs::exists(e.path() / kStateFile)) out.emplace_back(step, e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::optional<stdfs::path> latest_checkpoint(const stdfs::path& output_dir) {
  auto all = list_checkpoints(output_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

std::optional<stdfs::path> resume_checkpoint(const stdfs::path& output_dir, const config::Resume& resume) {
  switch (resume.choice) {
    case config::ResumeFrom::kNothing:
      return std::nullopt;
    case config::ResumeFrom::kLatest:
      return latest_checkpoint(output_dir);
    case config::ResumeFrom::kCheckpoint:
      break;
  }
  DA_CHECK(stdfs::exists(stdfs::path(resume.path) / kStateFile), "train.resume: ", resume.path,
           " is not a checkpoint directory (no ", kStateFile, "); use auto, none or a checkpoints/step-N path");
  return stdfs::path(resume.path);
}

void remove_unfinished_checkpoints(const stdfs::path& output_dir) {
  const stdfs::path root = output_dir / kCheckpointsDir;
  if (!stdfs::is_directory(root)) return;
  std::vector<stdfs::path> stale;
  for (const auto& e : stdfs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && name.find(".tmp-") != std::string::npos) stale.push_back(e.path());
  }
  for (const auto& p : stale) {
    log::info("removing ", p.string(), ": a checkpoint whose writing was cut short");
    fs::remove_tree(p);
  }
}

ModelIO llama_io(model::Llama& model, const stdfs::path& tokenizer_dir) {
  ModelIO io;
  io.save = [&model, tokenizer_dir](const stdfs::path& dir) {
    model::save_llama(model, dir, torch::kFloat32, tokenizer_dir);
  };
  io.load = [&model](const stdfs::path& dir) {
    // The checkpoint's architecture must be the one configured.
    const io::LlamaConfig have = io::read_hf_config(dir / "config.json");
    const io::LlamaConfig& want = model.config();
    auto same = [&](const char* key, auto a, auto b) {
      DA_CHECK(a == b, (dir / "config.json").string(), ": ", key, " is ", a, " but the configured model has ", b,
               " (resume with the config the checkpoint was trained with, or train.resume=none)");
    };
    same("vocab_size", have.vocab_size, want.vocab_size);
    same("hidden_size", have.hidden_size, want.hidden_size);
    same("intermediate_size", have.intermediate_size, want.intermediate_size);
    same("num_hidden_layers", have.num_hidden_layers, want.num_hidden_layers);
    same("num_attention_heads", have.num_attention_heads, want.num_attention_heads);
    same("num_key_value_heads", have.num_key_value_heads, want.num_key_value_heads);
    same("tie_word_embeddings", have.tie_word_embeddings, want.tie_word_embeddings);
    DA_CHECK(have.draft_token_ids == want.draft_token_ids, (dir / "config.json").string(), ": its draft vocabulary (",
             have.draft_token_ids.size(), " tokens; 0 = the whole vocabulary) is not the configured model's (",
             want.draft_token_ids.size(), ") (resume with the config and data the checkpoint was trained with, or "
             "train.resume=none)");
    auto loaded = model::load_llama(dir, torch::kCPU, torch::kFloat32);
    torch::NoGradGuard no_grad;
    auto dst = model.named_parameters();
    for (const auto& kv : loaded->named_parameters()) dst[kv.key()].copy_(kv.value());
  };
  return io;
}

void save_checkpoint(const stdfs::path& output_dir, const ModelIO& model, const AdamW& opt, const TrainerState& state,
                     Dist& dist, int64_t keep_last) {
  // Every rank's generator states, gathered to all (rank 0 writes them).
  std::vector<torch::Tensor> rng;
  for (const torch::Tensor& s : generator_states(dist.device()))
    for (const torch::Tensor& r : dist.all_gather(s.to(dist.device()), "generator-state gather"))
      rng.push_back(r.cpu());
  if (dist.rank() != 0) return;

  const stdfs::path dir = checkpoint_dir(output_dir, state.step);
  fs::AtomicDir tmp(dir);
  model.save(tmp.path());  // replaces the empty temporary directory
  opt.save(tmp.path() / "optimizer.pt");
  save_tensors_atomic(rng, tmp.path() / "rng.pt");
  json j = {{"format", "draftalign-checkpoint"}, {"version", 1},       {"step", state.step},
            {"consumed", state.consumed},        {"tokens", state.tokens}, {"skipped", state.skipped},
            {"empty_micro_batches", state.empty_micro_batches}, {"world_size", dist.world()}, {"extra", state.extra}};
  j["checksum"] = kChecksumAlgorithm;
  for (const char* f : kCheckpointFiles) j["checksums"][f] = file_checksum_hex(tmp.path() / f);
  fs::write_file_atomic(tmp.path() / kStateFile, j.dump(2) + "\n");
  tmp.commit();

  auto all = list_checkpoints(output_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) fs::remove_tree(all[i].second);
}

TrainerState load_checkpoint(const stdfs::path& dir, const ModelIO& model, AdamW& opt, Dist& dist) {
  const stdfs::path state_file = dir / kStateFile;
  const TrainerStateFile saved =
      read_trainer_state(state_file, {std::begin(kCheckpointFiles), std::end(kCheckpointFiles)});
  for (const char* f : kCheckpointFiles) {
    const stdfs::path p = dir / f;
    DA_CHECK(stdfs::exists(p), p.string(), ": missing from the checkpoint");
    DA_CHECK(file_checksum_hex(p, saved.checksum_algorithm) == saved.checksums.at(f), p.string(),
             ": checksum does not match ", state_file.string(),
             " (the file is damaged; resume from an older checkpoint with train.resume=<dir>)");
  }
  const TrainerState& s = saved.state;

  model.load(dir);
  opt.load(dir / "optimizer.pt");
  std::vector<torch::Tensor> rng;
  try {
    torch::load(rng, (dir / "rng.pt").string());
  } catch (const c10::Error& e) {
    throw Error(str_cat((dir / "rng.pt").string(), ": cannot load the generator states (",
                        std::string(e.what_without_backtrace()).substr(0, 200), ")"));
  }
  const int64_t per_rank = dist.device().is_cuda() ? 2 : 1;
  const int64_t saved_world = saved.world_size;
  if (saved_world == dist.world() && static_cast<int64_t>(rng.size()) == per_rank * saved_world) {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    cpu.set_state(rng[dist.rank()]);
    if (per_rank == 2) {
      at::Generator cuda = at::globalContext().defaultGenerator(dist.device());
      cuda.set_state(rng[saved_world + dist.rank()]);
    }
  } else {
    log::warn("checkpoint ", dir.string(), " was written by ", saved_world, " ranks (", rng.size(),
              " generator states); generators are not restored");
  }
  return s;
}

void truncate_metrics(const stdfs::path& file, int64_t step) {
  if (!stdfs::exists(file)) return;
  std::ifstream in(file);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;  // a line cut short by a kill
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() > step)
      continue;
    kept += line + "\n";
  }
  fs::write_file_atomic(file, kept);
}

}  // namespace draftalign::train
