// config.h: the typed configuration of every draftalign stage. One struct per YAML section; each lists its options
// exactly once in visit() (see schema.h). The defaults are the embedded demo: SmolLM2-135M-Instruct as the target and
// a small drafter with its vocabulary pretrained on the Debian text corpus. configs/demo.yaml spells them out.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/schema.h"
#include "io/hf_config.h"
#include "train/layout.h"

namespace draftalign::config {

// --- Typed choices: each option below that picks one of a few words is one of these; the schema maps the word. ------
enum class Device { kAuto, kCpu, kCuda };
DA_ENUM_NAMES(Device, "auto", "cpu", "cuda");
enum class Dtype { kAuto, kFp32, kBf16, kFp16 };
DA_ENUM_NAMES(Dtype, "auto", "fp32", "bf16", "fp16");
enum class OnNonfinite { kStop, kSkip };
DA_ENUM_NAMES(OnNonfinite, "stop", "skip");
enum class EmbeddingInit { kNormal, kTargetSvd };
DA_ENUM_NAMES(EmbeddingInit, "normal", "target-svd");
enum class OnBadRecord { kError, kSkip };
DA_ENUM_NAMES(OnBadRecord, "error", "skip");
enum class Loss { kTvdpp, kFkl, kRkl, kTvd, kCe };
DA_ENUM_NAMES(Loss, "tvdpp", "fkl", "rkl", "tvd", "ce");
enum class Teacher { kOnline, kOffline };
DA_ENUM_NAMES(Teacher, "online", "offline");
enum class PretrainTeacher { kNone, kTarget };
DA_ENUM_NAMES(PretrainTeacher, "none", "target");
enum class DrafterKind { kModel, kEagle3 };
DA_ENUM_NAMES(DrafterKind, "model", "eagle3");
enum class TvdppScope { kToken, kBatch };
DA_ENUM_NAMES(TvdppScope, "token", "batch");
enum class TvdppWeighting { kQ, kUniform };
DA_ENUM_NAMES(TvdppWeighting, "q", "uniform");
enum class TvdppStats { kQ, kVocab };
DA_ENUM_NAMES(TvdppStats, "q", "vocab");

// Where a run writes, how it seeds, which device it uses.
struct RunSection {
  std::string output_dir = "runs/demo";
  int64_t seed = 1234;
  Device device = Device::kAuto;
  int64_t threads = 0;
  int64_t log_every = 10;
  double progress_interval_s = 10.0;
  double dist_timeout_s = 300.0;
  std::vector<std::string> report_to = {"jsonl"};
  std::string wandb_project = "draftalign";

  template <class V>
  void visit(V& s) {
    s.add("output_dir", output_dir,
          "the run's directory: the resolved config of each command, and ${run.output_dir} in the stage directories").as(Role::kOutput);
    s.add("seed", seed, "base random seed; each rank and stage derives its own from it", Bounds::at_least(0));
    s.add("device", device, "auto = CUDA when available, else CPU");
    s.add("threads", threads,
          "CPU threads for intra-op parallelism; 0 = OMP_NUM_THREADS when set, else the cores shared among the local "
          "ranks",
          Bounds::at_least(0)).as(Role::kNoEffect);
    s.add("log_every", log_every, "steps between metric log lines", Bounds::at_least(1)).as(Role::kNoEffect);
    s.add("progress_interval_s", progress_interval_s,
          "seconds between plain progress lines when stdout is not a terminal", Bounds::positive()).as(Role::kNoEffect);
    s.add("dist_timeout_s", dist_timeout_s,
          "data parallel: seconds a collective (or the rendezvous) may wait for the other ranks before failing",
          Bounds::positive()).as(Role::kNoEffect);
    s.add_choice("report_to", report_to,
                 "where training metrics go: jsonl (<run>/metrics.jsonl, always written), tensorboard "
                 "(<run>/tensorboard/), wandb (a sidecar; offline unless WANDB_API_KEY is set)",
                 {"jsonl", "tensorboard", "wandb"}).as(Role::kNoEffect);
    s.add("wandb_project", wandb_project, "the W&B project of report_to: [wandb]").as(Role::kNoEffect);
  }
};

// The chat-tuned target model: a Hugging Face directory (config.json, *.safetensors, tokenizer.json/.model).
struct TargetSection {
  std::string dir = ".cache/models/SmolLM2-135M-Instruct";
  Dtype dtype = Dtype::kAuto;
  std::string chat_template = "auto";

  template <class V>
  void visit(V& s) {
    s.add("dir", dir, "Hugging Face checkpoint directory of the target (the demo converts it from the GGUF)").as(Role::kInputDir);
    s.add("dtype", dtype, "compute dtype; auto = bf16 on CUDA, fp32 on CPU", {"auto", "fp32", "bf16"});
    s.add_choice("chat_template", chat_template,
                 "auto = the Jinja template the target ships, rendered as transformers renders it; chatml / llama2 = "
                 "built in",
                 {"auto", "chatml", "llama2"});
  }
};

// Llama-architecture shape of a drafter trained from scratch. The values live in an io::LlamaConfig (the struct
// config.json is read into), so the YAML, the model and the exported checkpoint cannot drift apart.
struct ModelShape {
  io::LlamaConfig llama = demo_drafter();
  // > 0: the output head covers only the draft_vocab_size tokens most frequent in the pretraining corpus (pretrain
  // chooses them; distill chooses again with the target's answers first), model/llama.h set_draft_vocab. The demo's
  // 8192 (of SmolLM2's 49152) was chosen on the development split at a fixed pretraining wall clock.
  int64_t draft_vocab_size = 8192;

  // ~16M parameters with SmolLM2's 49152-token vocabulary (12% of the 135M target; 4/5 of them are the embedding).
  static io::LlamaConfig demo_drafter() {
    io::LlamaConfig c;
    c.vocab_size = 49152, c.hidden_size = 256, c.intermediate_size = 768, c.num_hidden_layers = 4;
    c.num_attention_heads = 4, c.num_key_value_heads = 4, c.max_position_embeddings = 2048;
    c.rope_theta = 100000.0, c.rms_norm_eps = 1e-5, c.tie_word_embeddings = true;
    return c;
  }

  // The drafter's config: the YAML values with head_dim = hidden_size / num_heads. Token ids (bos, eos, pad) are the
  // target tokenizer's, set by the stage that pairs them.
  io::LlamaConfig hf_config() const {
    io::LlamaConfig c = llama;
    c.head_dim = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
    return c;
  }

  template <class V>
  void visit(V& s) {
    s.add("vocab_size", llama.vocab_size, "vocabulary size; must equal the target's", Bounds::at_least(1));
    s.add("hidden_size", llama.hidden_size, "model width", Bounds::at_least(1));
    s.add("intermediate_size", llama.intermediate_size, "SwiGLU MLP width", Bounds::at_least(1));
    s.add("num_layers", llama.num_hidden_layers, "transformer blocks", Bounds::at_least(1));
    s.add("num_heads", llama.num_attention_heads, "attention heads (hidden_size / num_heads = head dim)",
          Bounds::at_least(1));
    s.add("num_kv_heads", llama.num_key_value_heads, "key/value heads for grouped-query attention",
          Bounds::at_least(1));
    s.add("max_seq_len", llama.max_position_embeddings, "longest sequence (RoPE positions)", Bounds::at_least(1));
    s.add("rope_theta", llama.rope_theta, "RoPE base frequency", Bounds::positive());
    s.add("rms_norm_eps", llama.rms_norm_eps, "RMSNorm epsilon", Bounds::positive());
    s.add("tie_embeddings", llama.tie_word_embeddings, "share the input embedding and the output projection");
    s.add("draft_vocab_size", draft_vocab_size,
          "0: the output head covers the whole vocabulary; N: only the N most frequent tokens (the corpus's, then "
          "distill's answers first); the drafter proposes only those, the target still verifies in its vocabulary",
          Bounds::at_least(0));
  }
};

struct OptimSection {
  double lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup_steps = 100;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;

  template <class V>
  void visit(V& s) {
    s.add("lr", lr, "peak learning rate (AdamW)", Bounds::positive());
    s.add("min_lr", min_lr, "learning rate at the end of the cosine decay", Bounds::at_least(0));
    s.add("warmup_steps", warmup_steps, "linear warm-up steps", Bounds::at_least(0));
    s.add("weight_decay", weight_decay, "decoupled weight decay (not on norms)", Bounds::at_least(0));
    s.add("beta1", beta1, "AdamW beta1", Bounds::closed_open(0, 1));
    s.add("beta2", beta2, "AdamW beta2", Bounds::closed_open(0, 1));
    s.add("eps", eps, "AdamW epsilon", Bounds::positive());
    s.add("grad_clip", grad_clip, "clip the global gradient norm to this; 0 = off", Bounds::at_least(0));
  }
};

enum class ResumeFrom { kLatest, kNothing, kCheckpoint };
DA_ENUM_NAMES(ResumeFrom, "auto", "none", "a checkpoint directory");
using Resume = WordOrPath<ResumeFrom>;  // kCheckpoint: the directory is `path`

// The training engine shared by pretraining and distillation.
struct TrainSection {
  int64_t steps = 2000;
  int64_t seq_len = 256;
  int64_t micro_batch_size = 16;
  int64_t grad_accum = 1;
  int64_t eval_every = 200;
  int64_t eval_batches = 8;
  int64_t save_every = 500;
  int64_t keep_last = 2;
  double bucket_mb = 25.0;
  Resume resume;  // auto
  Dtype dtype = Dtype::kAuto;
  OnNonfinite on_nonfinite = OnNonfinite::kStop;
  OptimSection optim;

  template <class V>
  void visit(V& s) {
    s.add("steps", steps, "optimizer steps", Bounds::at_least(1));
    s.add("seq_len", seq_len, "tokens per training sequence", Bounds::at_least(2));
    s.add("micro_batch_size", micro_batch_size, "sequences per rank per forward/backward", Bounds::at_least(1));
    s.add("grad_accum", grad_accum, "micro-batches per optimizer step", Bounds::at_least(1));
    s.add("eval_every", eval_every, "steps between validation passes; 0 = only at the end", Bounds::at_least(0));
    s.add("eval_batches", eval_batches, "validation micro-batches per pass, all ranks together", Bounds::at_least(1));
    s.add("save_every", save_every, "steps between checkpoints; 0 = only at the end", Bounds::at_least(0)).as(Role::kNoEffect);
    s.add("keep_last", keep_last, "checkpoints kept on disk (older ones are deleted)", Bounds::at_least(1)).as(Role::kNoEffect);
    s.add("bucket_mb", bucket_mb, "data parallel: MB of gradients per all-reduce bucket", Bounds::positive()).as(Role::kNoEffect);
    s.add("resume", resume, "auto = latest checkpoint in the output dir, none = start over, or a checkpoint path").as(Role::kNoEffect);
    s.add("dtype", dtype, "auto = bf16 autocast with fp32 master weights on CUDA, fp32 on CPU",
          {"auto", "fp32", "bf16"});
    s.add("on_nonfinite", on_nonfinite, "a NaN/Inf loss: stop (naming the last good checkpoint) or skip");
    s.section("optim", optim, "AdamW with linear warm-up and cosine decay");
  }
};

// prepare-data: text / JSONL -> tokenized binary shards.
struct PrepareSection {
  std::vector<std::string> inputs = {".cache/corpus/debian-text.jsonl"};
  std::string output_dir = "${run.output_dir}/shards";
  std::string tokenizer = "";
  std::string text_field = "text";
  double val_fraction = 0.01;
  int64_t shard_tokens = 16 * 1024 * 1024;
  int64_t workers = 0;

  template <class V>
  void visit(V& s) {
    s.add("inputs", inputs, "text (.txt) or JSONL (.jsonl) files to tokenize").as(Role::kInputFile);
    s.add("output_dir", output_dir, "where the shards and their index go").as(Role::kOutput);
    s.add("tokenizer", tokenizer, "directory with tokenizer.json or tokenizer.model (and tokenizer_config.json); empty = the target's").as(Role::kInputDir);
    s.add("text_field", text_field, "JSONL field holding the text");
    s.add("val_fraction", val_fraction, "fraction of documents held out for validation", Bounds::closed_open(0, 0.5));
    s.add("shard_tokens", shard_tokens, "tokens per shard", Bounds::at_least(1024));
    s.add("workers", workers, "tokenizer threads; 0 = all cores", Bounds::at_least(0)).as(Role::kNoEffect);
  }
};

struct PretrainSection {
  // The demo's budget: about 6 minutes on 2 CPU cores, the wall clock of 250 steps of the drafter with a head over the
  // whole vocabulary; with the 8192-token draft vocabulary the same minutes hold 642 steps x 2048 tokens
  // (tools/shape_sweep.sh measures the step times; docs/RESULTS.md, 2026-12-07).
  static TrainSection demo_train() {
    TrainSection t;
    t.steps = 642, t.seq_len = 256, t.micro_batch_size = 8, t.eval_every = 100, t.eval_batches = 4;
    t.save_every = 100, t.optim.lr = 2e-3, t.optim.min_lr = 2e-4, t.optim.warmup_steps = 64;
    return t;
  }

  std::string data_dir = "${prepare.output_dir}";
  std::string init_from = "";
  EmbeddingInit embedding_init = EmbeddingInit::kTargetSvd;
  std::string output_dir = "${run.output_dir}/pretrain";
  int64_t seed = -1;
  bool document_mask = true;
  PretrainTeacher teacher = PretrainTeacher::kNone;
  Loss kd_loss = Loss::kFkl;
  double kd_weight = 1.0;
  double ce_weight = 0.0;
  ModelShape model;
  TrainSection train = demo_train();

  template <class V>
  void visit(V& s) {
    s.add("data_dir", data_dir, "token shards written by prepare-data").as(Role::kInputDir);
    s.add("init_from", init_from, "start from this HF checkpoint directory; empty = from scratch (model.*)").as(Role::kInputDir);
    s.add("embedding_init", embedding_init,
          "from scratch: normal(0, 0.02), or target-svd = the target's embedding matrix projected on its top "
          "model.hidden_size right singular vectors (E V_d), the tied head with it");
    s.add("output_dir", output_dir, "checkpoints, metrics and the final HF-format drafter").as(Role::kOutput);
    s.add("seed", seed,
          "training seed: -1 = run.seed, written to output_dir; n >= 0 = seed n, written to output_dir/seed-n (a run "
          "of several seeds, which evaluate combines)", Bounds::at_least(-1));
    s.add("document_mask", document_mask,
          "packed sequences: attend only within each document, positions restarting at each one");
    s.add("teacher", teacher,
          "none = next-token cross-entropy on the corpus; target = distillation pretraining: the target (target.dir) "
          "reads the same windows and the drafter learns its full next-token distribution at every position, loss "
          "kd_weight * kd_loss + ce_weight * cross-entropy");
    s.add("kd_loss", kd_loss, "teacher = target: the distribution loss (fkl, rkl, tvd, tvdpp)");
    s.add("kd_weight", kd_weight, "teacher = target: weight of kd_loss", Bounds::at_least(0));
    s.add("ce_weight", ce_weight, "teacher = target: weight of next-token cross-entropy on the corpus",
          Bounds::at_least(0));
    s.section("model", model, "drafter architecture when training from scratch");
    s.section("train", train, "training loop");
  }
};

// generate: the target answers instruction prompts. The demo's budget: 400 answers of up to 96 tokens with the top-20
// log-probs for the offline teacher, half to the Debian-built prompts and half to the ones the target wrote itself
// (magpie; about 4 minutes on 2 CPU cores); configs/demo-gpu.yaml answers every prompt.
struct GenerateSection {
  std::vector<std::string> prompts = {".cache/prompts/train.jsonl", "${magpie.output}"};
  std::string output_dir = "${run.output_dir}/distill-data";
  double temperature = 0.0;  // greedy answers, chosen on the development split (docs/RESULTS.md)
  double top_p = 1.0;
  int64_t top_k = 0;
  int64_t max_new_tokens = 96;
  std::vector<std::string> stop = {};
  std::vector<int64_t> stop_ids = {};
  int64_t responses_per_prompt = 1;
  int64_t batch_size = 32;
  int64_t max_prompts = 400;
  int64_t topk_logprobs = 20;
  int64_t shard_size = 32;
  std::vector<double> prompt_weights = {};
  std::string shard = "";
  OnBadRecord on_bad_record = OnBadRecord::kError;

  template <class V>
  void visit(V& s) {
    s.add("prompts", prompts, "JSONL prompt files (instruction/input, conversations/messages, or turns)").as(Role::kInputFile);
    s.add("output_dir", output_dir, "response shards, manifest and a JSONL preview").as(Role::kOutput);
    s.add("temperature", temperature, "sampling temperature; 0 = greedy", Bounds::at_least(0));
    s.add("top_p", top_p, "nucleus sampling mass", Bounds::open_closed(0, 1));
    s.add("top_k", top_k, "sample among the k most likely tokens; 0 = off", Bounds::at_least(0));
    s.add("max_new_tokens", max_new_tokens, "longest response", Bounds::at_least(1));
    s.add("stop", stop, "stop strings besides the EOS token");
    s.add("stop_ids", stop_ids, "token ids that end a response besides the EOS token", Bounds::at_least(0));
    s.add("responses_per_prompt", responses_per_prompt, "samples per prompt", Bounds::at_least(1));
    s.add("batch_size", batch_size, "sequences decoded together (continuous batching)", Bounds::at_least(1));
    s.add("max_prompts", max_prompts, "use only the first N prompts; 0 = all", Bounds::at_least(0));
    s.add("topk_logprobs", topk_logprobs, "store the target's top-k log-probs per response token; 0 = none",
          Bounds::at_least(0));
    s.add("shard_size", shard_size, "requests per output shard (the unit a killed run redoes)", Bounds::at_least(1));
    s.add("prompt_weights", prompt_weights,
          "one weight per prompt file: the files are interleaved in this ratio (before max_prompts); empty = "
          "an even mix (every weight 1)", Bounds::at_least(0));
    s.add("shard", shard, "i/n: this process takes every n-th shard from i (independent processes); "
                          "empty = RANK/WORLD_SIZE of the launcher").as(Role::kNoEffect);
    s.add("on_bad_record", on_bad_record, "a malformed prompt line: error (with file:line) or skip and count");
  }
};

// magpie: instruction prompts written by the target itself (Magpie, Xu et al. 2024). The target samples the user turn
// from the bare chat prefix (for ChatML: the system turn, then `<|im_start|>user\n`); what it writes, up to the end of
// the turn, is a request in its own distribution. Unfinished, too short or long, template-bearing, non-text and
// repetitive samples are dropped, then exact and near duplicates (word n-gram containment) among themselves and
// against the evaluation prompts (`exclude`), until `count` are kept. Deterministic for a seed.
struct MagpieSection {
  std::string output = "${run.output_dir}/prompts/target-written.jsonl";
  int64_t count = 200;
  int64_t max_samples = 0;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t max_new_tokens = 64;
  int64_t min_chars = 20;
  int64_t max_chars = 400;
  int64_t ngram = 3;
  double max_overlap = 0.5;
  std::vector<std::string> exclude = {".cache/prompts/mt-bench.jsonl"};
  std::string system = "";
  int64_t batch_size = 32;

  template <class V>
  void visit(V& s) {
    s.add("output", output, "the prompt JSONL written (instruction + provenance per line)").as(Role::kOutput);
    s.add("count", count, "prompts to keep", Bounds::at_least(1));
    s.add("max_samples", max_samples, "give up after this many samples; 0 = 4 x count", Bounds::at_least(0));
    s.add("temperature", temperature, "sampling temperature of the user turn", Bounds::positive());
    s.add("top_p", top_p, "nucleus sampling mass", Bounds::open_closed(0, 1));
    s.add("max_new_tokens", max_new_tokens, "longest user turn in tokens (a longer one is dropped)",
          Bounds::at_least(1));
    s.add("min_chars", min_chars, "shortest prompt kept, in characters", Bounds::at_least(1));
    s.add("max_chars", max_chars, "longest prompt kept, in characters", Bounds::at_least(1));
    s.add("ngram", ngram, "word n-gram length of the near-duplicate test", Bounds::at_least(1));
    s.add("max_overlap", max_overlap,
          "a prompt sharing this fraction of its (or the other's) word n-grams with a kept or excluded one is a "
          "near duplicate", Bounds::open_closed(0, 1));
    s.add("exclude", exclude, "prompt files no kept prompt may overlap (the evaluation prompts)").as(Role::kInputFile);
    s.add("system", system, "system prompt of the prefix; empty = the template's default (as generate uses)");
    s.add("batch_size", batch_size, "sequences sampled together", Bounds::at_least(1));
  }
};

// distill.eagle3: the EAGLE-3 head distill trains when distill.kind = eagle3 (trainers/distill_eagle3.cpp). It reads
// the target's hidden states at three taps; its training sequences mix the target's answers (distill.data_dir, the
// response positions) with windows of the pretraining corpus the target reads at prefill speed (all positions).
struct Eagle3Section {
  int64_t draft_vocab_size = 8192;
  std::vector<int64_t> taps = {};
  int64_t ttt_steps = 3;
  double decay = 0.8;
  std::string corpus = "${prepare.output_dir}";
  double corpus_fraction = 0.5;
  int64_t vocab_count_tokens = 20000000;
  int64_t steps = 0;
  double lr = 0.002;

  template <class V>
  void visit(V& s) {
    s.add("draft_vocab_size", draft_vocab_size,
          "tokens of the head's output layer: the most frequent in its training text (answers and corpus), the "
          "target's stop tokens always in", Bounds::at_least(1));
    s.add("taps", taps, "the target hidden states it reads (transformers' output_hidden_states indices, ascending); "
                        "[] = 2, L/2, L-3 as EAGLE-3", Bounds::at_least(0));
    s.add("ttt_steps", ttt_steps, "training-time test: steps the head is unrolled on its own outputs (7 in EAGLE-3)",
          Bounds::at_least(1));
    s.add("decay", decay, "weight decay^i of step i's loss (0.8 in EAGLE-3)", Bounds::open_closed(0, 1));
    s.add("corpus", corpus, "token shards (prepare-data) the target reads for prefill positions; empty = answers only")
        .as(Role::kInputDir);
    s.add("corpus_fraction", corpus_fraction, "share of training sequences that are corpus windows (needs corpus)",
          Bounds::closed(0, 1));
    s.add("steps", steps, "optimizer steps of the head; 0 = distill.train.steps", Bounds::at_least(0));
    s.add("lr", lr, "peak learning rate of the head (trained from scratch, it takes a larger one than a pretrained "
                    "drafter); 0 = distill.train.optim.lr", Bounds::at_least(0));
    s.add("vocab_count_tokens", vocab_count_tokens, "corpus tokens counted (from the start of its train split) when "
          "choosing the draft vocabulary, beside every training answer", Bounds::at_least(0));
  }
};

// distill: knowledge distillation of the drafter against the target's token distributions. The demo's budget: 300
// steps of 4 answers (3.3 epochs of the 360 training pairs) against the stored top-20 log-probs (offline: no target
// forward), about 2 minutes per loss on 2 CPU cores, with the settings of the loss ablation (docs/TVDPP.md); configs/demo-gpu.yaml trains online, longer.
struct DistillSection {
  static TrainSection demo_train() {
    TrainSection t;
    t.steps = 300, t.seq_len = 192, t.micro_batch_size = 4, t.eval_every = 0, t.eval_batches = 10, t.save_every = 0;
    t.optim.lr = 5e-4, t.optim.min_lr = 5e-5, t.optim.warmup_steps = 4;
    return t;
  }

  DrafterKind kind = DrafterKind::kModel;
  std::string data_dir = "${generate.output_dir}";
  std::string student = std::string("${pretrain.output_dir}/") + train::kFinalDir;
  std::string output_dir = "${run.output_dir}/distill";
  int64_t seed = -1;
  Loss loss = Loss::kTvdpp;
  Teacher teacher = Teacher::kOffline;
  double temperature = 1.0;
  double kd_weight = 1.0;
  double ce_weight = 0.0;
  TvdppScope tvdpp_scope = TvdppScope::kToken;
  TvdppWeighting tvdpp_weighting = TvdppWeighting::kQ;
  TvdppStats tvdpp_stats = TvdppStats::kQ;
  double on_policy_fraction = 0.0;
  double on_policy_temperature = 1.0;
  double val_fraction = 0.1;
  Eagle3Section eagle3;
  TrainSection train = demo_train();

  template <class V>
  void visit(V& s) {
    s.add("kind", kind, "model = the independent drafter (distill.student); eagle3 = an EAGLE-3 head on the target's "
                        "hidden states (distill.eagle3)");
    s.add("data_dir", data_dir, "prompt/response shards written by generate").as(Role::kInputDir);
    s.add("student", student, "drafter checkpoint to start from (HF directory)").as(Role::kInputDir);
    s.add("output_dir", output_dir, "checkpoints, metrics and the distilled drafter (a sub-directory per loss)").as(Role::kOutput);
    s.add("seed", seed,
          "training seed: -1 = run.seed, written to output_dir/<run name>; n >= 0 = seed n, written to "
          "output_dir/<run name>/seed-n (a run of several seeds, which evaluate combines)", Bounds::at_least(-1));
    s.add("loss", loss, "distillation loss");
    s.add("teacher", teacher, "online = run the target; offline = stored top-k log-probs");
    s.add("temperature", temperature, "softmax temperature T for both p and q", Bounds::positive());
    s.add("kd_weight", kd_weight, "weight of the distillation loss", Bounds::at_least(0));
    s.add("ce_weight", ce_weight, "weight of next-token cross-entropy on the responses", Bounds::at_least(0));
    s.add("tvdpp_scope", tvdpp_scope, "reward normalisation statistics: per token or over the global batch");
    s.add("tvdpp_weighting", tvdpp_weighting, "q = exact policy gradient; uniform = 1/|V| weights");
    s.add("tvdpp_stats", tvdpp_stats,
          "mean and std of the reward 1[p > q]: q = under the drafter's q (E_q[r]); vocab = over the V entries, "
          "which the tail sets (docs/TVDPP.md)");
    s.add("on_policy_fraction", on_policy_fraction,
          "fraction of training sequences whose response the drafter samples itself (needs teacher = online)",
          Bounds::closed(0, 1));
    s.add("on_policy_temperature", on_policy_temperature,
          "sampling temperature of the drafter's on-policy responses (0 = greedy)", Bounds::at_least(0));
    s.add("val_fraction", val_fraction, "pairs held out for the alpha / tau validation", Bounds::closed_open(0, 0.5));
    s.section("eagle3", eagle3, "the EAGLE-3 head (kind = eagle3)");
    s.section("train", train, "training loop");
  }
};

// The training loop of a distill run: distill.train, and for a head (kind = eagle3) with distill.eagle3's steps and
// learning rate where set (min_lr scaled with it).
TrainSection distill_train(const DistillSection& d);

// evaluate: is a drafter worth deploying? Two measurements:
//   exact greedy tau (one pass)  the target answers every prompt (every MT-bench turn, the second asked after the
//                                target's own first answer) greedily once; each drafter reads prompt + answer in one
//                                teacher-forced pass; tau(g) for every g follows exactly (evaluators/acceptance.h),
//                                with 95% bootstrap intervals over prompts. Prompt lookup is always a row.
//   timed speculative decoding   the real draft-then-verify decoder on the first `timed_prompts` turns, at every
//                                temperature x gamma, alternated with plain decoding `repeats` times: wall-clock
//                                speed-up and, at T > 0, measured acceptance.
//   speculative sampling check   at each of `sampling_temperatures`, on the first `sampling_prompts` turns: the
//                                target's sampled answers scored in one teacher-forced pass (per-position alpha =
//                                sum_x min(p, q), and the i.i.d. tau estimate from it), beside the first-position
//                                acceptance and tau the real decoder measures on the same turns at `sampling_gamma`.
// The demo's budget on 2 CPU cores (at most 5 minutes): all 160 MT-bench turns x 48 tokens one-pass; 2 turns x 16
// tokens timed greedy at g = 1; the sampling check on 8 turns x 32 tokens at T = 1, g = 1.
struct EvaluateSection {
  std::vector<std::string> drafters = {std::string("${pretrain.output_dir}/") + train::kFinalDir};
  std::vector<std::string> prompts = {".cache/prompts/mt-bench.jsonl"};
  std::string report_dir = "${run.output_dir}/report";
  int64_t turns = 2;
  int64_t max_new_tokens = 48;
  int64_t context_max_new_tokens = 1024;
  int64_t max_prompts = 0;
  int64_t batch_size = 32;
  std::vector<int64_t> exact_gammas = {1, 2, 3, 4, 5, 6, 7, 8};
  bool prompt_lookup = true;
  bool hybrid = true;
  double draft_stop_prob = 0.0;
  int64_t prompt_lookup_min = 1;
  int64_t prompt_lookup_max = 3;
  int64_t bootstrap_resamples = 10000;
  std::vector<std::string> contrasts = {};
  int64_t timed_prompts = 8;
  int64_t timed_max_new_tokens = 16;
  std::vector<int64_t> gammas = {1};
  std::vector<double> temperatures = {0.0};
  double top_p = 1.0;
  int64_t top_k = 0;
  int64_t repeats = 3;
  std::vector<double> sampling_temperatures = {1.0};
  int64_t sampling_prompts = 24;
  int64_t sampling_max_new_tokens = 32;
  int64_t sampling_gamma = 1;
  std::string python = "auto";

  template <class V>
  void visit(V& s) {
    s.add("drafters", drafters, "drafter checkpoint directories to compare (HF directories)").as(Role::kInputDir);
    s.add("prompts", prompts, "JSONL prompt files (MT-bench mt-en.jsonl or any prompt file)").as(Role::kInputFile);
    s.add("report_dir", report_dir, "JSON, Markdown and plots").as(Role::kOutput);
    s.add("turns", turns, "user turns asked per prompt (MT-bench has 2; a later turn follows the target's own "
                          "greedy answer to the one before)", Bounds::at_least(1));
    s.add("max_new_tokens", max_new_tokens, "tokens of each greedy answer the exact tau is measured on",
          Bounds::at_least(1));
    s.add("context_max_new_tokens", context_max_new_tokens,
          "the full greedy answer a later turn follows is decoded up to this many tokens (Spec-Bench's 1024; only "
          "its first max_new_tokens are measured)", Bounds::at_least(1));
    s.add("max_prompts", max_prompts, "use only the first N prompts; 0 = all", Bounds::at_least(0));
    s.add("batch_size", batch_size, "sequences the target answers together (continuous batching)",
          Bounds::at_least(1));
    s.add("exact_gammas", exact_gammas, "draft lengths of the exact greedy tau (one pass: they cost nothing extra)",
          Bounds::at_least(1));
    s.add("prompt_lookup", prompt_lookup, "add prompt-lookup (n-gram) drafting, the free baseline, as a drafter");
    s.add("hybrid", hybrid, "add each model drafter with prompt lookup in front (<name>+lookup): the n-gram's "
                            "continuation when the context's trailing n-gram recurs, the drafter's for the rest");
    s.add("draft_stop_prob", draft_stop_prob,
          "a model drafter or EAGLE-3 head ends its draft after a token whose probability (top-1 of its softmax at "
          "temperature 1) is below this, as transformers' assistant_confidence_threshold; 0 = off (always gamma "
          "tokens). Exact and timed passes; hybrids and the sampling check draft without it", Bounds::closed_open(0, 1));
    s.add("prompt_lookup_min", prompt_lookup_min, "prompt lookup: the shortest n-gram matched", Bounds::at_least(1));
    s.add("prompt_lookup_max", prompt_lookup_max, "prompt lookup: the longest n-gram matched", Bounds::at_least(1));
    s.add("bootstrap_resamples", bootstrap_resamples,
          "bootstrap resamples of the prompt clusters (and training seeds) for the intervals; the corrected intervals "
          "of a family of m comparisons reach 0.05 / m into each tail, so keep it large",
          Bounds::at_least(100));
    s.add("contrasts", contrasts,
          "the family of paired comparisons of tau, each 'A vs B' naming two report rows (a drafter, its '+lookup' "
          "hybrid, a method whose seeds are combined, prompt-lookup); [] = every pair of rows. Holm-corrected");
    s.add("timed_prompts", timed_prompts, "turns decoded by the real speculative decoder for wall-clock speed-up, a "
                                          "fixed-seed sample stratified by category; 0 = none", Bounds::at_least(0));
    s.add("timed_max_new_tokens", timed_max_new_tokens, "tokens generated per timed turn", Bounds::at_least(1));
    s.add("gammas", gammas, "draft lengths g of the timed decoder", Bounds::at_least(1));
    s.add("temperatures", temperatures, "sampling temperatures of the timed decoder; 0 = greedy", Bounds::at_least(0));
    s.add("top_p", top_p, "nucleus mass, applied to target and drafter alike", Bounds::open_closed(0, 1));
    s.add("top_k", top_k, "top-k, applied to target and drafter alike; 0 = off", Bounds::at_least(0));
    s.add("repeats", repeats, "timed runs per setting, each alternated with a plain-decoding run (median and "
                              "interval reported)", Bounds::at_least(1));
    s.add("sampling_temperatures", sampling_temperatures, "temperatures of the speculative sampling check (one-pass "
          "alpha vs the real decoder's acceptance); [] = none", Bounds::positive());
    s.add("sampling_prompts", sampling_prompts,
          "turns of the sampling check, a fixed-seed sample stratified by category", Bounds::at_least(0));
    s.add("sampling_max_new_tokens", sampling_max_new_tokens, "tokens sampled per turn in the sampling check",
          Bounds::at_least(1));
    s.add("sampling_gamma", sampling_gamma, "draft length of the real decoder in the sampling check",
          Bounds::at_least(1));
    s.add("python", python, "interpreter with matplotlib that draws the plots; auto = $DRAFTALIGN_PYTHON, else "
                            ".venv/bin/python, else python3; off = no plots").as(Role::kNoEffect);
  }
};

// The sub-directory of distill.output_dir a distill configuration writes to (its run name): loss_run_name, prefixed
// eagle3- for an EAGLE-3 head, suffixed -onpolicy<fraction> with on-policy data.
std::string distill_run_name(const DistillSection& d);
// The run's directory: output_dir/<run name>, or output_dir/<run name>/seed-<n> for distill.seed = n >= 0.
std::string distill_run_dir(const DistillSection& d);

// export: a training checkpoint -> a Hugging Face directory for transformers / vLLM.
struct ExportSection {
  // The final drafter of the default distill run.
  std::string checkpoint =
      "${distill.output_dir}/" + distill_run_name(DistillSection{}) + "/" + std::string(train::kFinalDir);
  std::string output_dir = "${run.output_dir}/export/drafter";
  Dtype dtype = Dtype::kBf16;

  template <class V>
  void visit(V& s) {
    s.add("checkpoint", checkpoint, "checkpoint directory to export (a final drafter or checkpoints/step-NNNNNNN)").as(Role::kInputDir);
    s.add("output_dir", output_dir, "Hugging Face directory to write").as(Role::kOutput);
    s.add("dtype", dtype, "weight dtype in model.safetensors", {"fp32", "bf16", "fp16"});
  }
};

// data show / data stats: look into a distillation dataset; data import: make one from chat JSONL.
struct DataSection {
  std::string dir = "";
  int64_t samples = 3;
  int64_t first = 0;
  int64_t bins = 8;
  std::vector<std::string> inputs;
  OnBadRecord on_bad_record = OnBadRecord::kError;
  int64_t shard_size = 1000;

  template <class V>
  void visit(V& s) {
    s.add("dir", dir,
          "the distillation data directory (generate's output, or data import's); empty = "
          "generate.output_dir").as(Role::kInputDir);
    s.add("samples", samples, "data show: records to print", Bounds::at_least(1));
    s.add("first", first, "data show: index of the first record printed", Bounds::at_least(0));
    s.add("bins", bins, "data stats: histogram bins", Bounds::at_least(1));
    s.add("inputs", inputs, "data import: chat JSONL files (messages or ShareGPT conversations with assistant turns)").as(Role::kInputFile);
    s.add("on_bad_record", on_bad_record, "data import: a malformed line: error (with file:line) or skip and count");
    s.add("shard_size", shard_size, "data import: records per output shard", Bounds::at_least(1));
  }
};

// The distillation runs pipeline.losses can name: a loss (tvdpp with the distill section's TVD++ options, fkl, rkl,
// tvd, ce) or a TVD++ variant by the name of its run directory, tvdpp-<scope>-<weighting>[-vocab]
// (distill_run_name), so an ablation of the TVD++ options is one pipeline config (configs/ablation.yaml); each but ce
// prefixed eagle3- is an EAGLE-3 head trained with that loss (distill.kind = eagle3, distill.eagle3).
std::vector<std::string> distill_run_choices();
// The part of a distill run's name its loss options make: the loss, or tvdpp-<scope>-<weighting>[-vocab].
std::string loss_run_name(const DistillSection& d);
// `d` with the loss options and drafter kind `run` names set (a bare loss sets distill.loss and kind = model); an
// Error for another name.
DistillSection with_run(DistillSection d, const std::string& run);


struct PipelineSection {
  std::vector<std::string> losses = {"tvdpp", "fkl", "tvd"};
  bool target_prompts = true;
  std::vector<int64_t> seeds = {};
  bool seed_pretraining = false;

  template <class V>
  void visit(V& s) {
    s.add_choice("losses", losses,
                 "distillation runs trained and compared by the pipeline: a loss, or a TVD++ variant by its run "
                 "name (tvdpp-<scope>-<weighting>[-vocab]); eagle3-<loss> trains an EAGLE-3 head (distill.eagle3)",
                 distill_run_choices());
    s.add("target_prompts", target_prompts,
          "run magpie before generate (the target writes prompts to magpie.output; list that file in generate.prompts)");
    s.add("seeds", seeds,
          "training seeds: each distillation run is trained once per seed (distill.seed) and evaluate reports each "
          "seed and the seeds combined, with intervals over seeds and questions; [] = once, with run.seed",
          Bounds::at_least(0));
    s.add("seed_pretraining", seed_pretraining,
          "with seeds: pretrain once per seed too (pretrain.seed), each seed's distillations starting from its own "
          "pretrained drafter; else one pretraining is shared and the seed spread is distillation's alone");
  }
};

struct Config {
  RunSection run;
  TargetSection target;
  PrepareSection prepare;
  PretrainSection pretrain;
  GenerateSection generate;
  MagpieSection magpie;
  DistillSection distill;
  EvaluateSection evaluate;
  ExportSection export_;
  DataSection data;
  PipelineSection pipeline;

  template <class V>
  void visit(V& s) {
    s.section("run", run, "output, seed, device, logging");
    s.section("target", target, "the chat-tuned target model");
    s.section("prepare", prepare, "prepare-data: corpus -> token shards");
    s.section("pretrain", pretrain, "pretrain: the drafter on the corpus");
    s.section("generate", generate, "generate: the target answers instruction prompts");
    s.section("magpie", magpie, "magpie: the target writes instruction prompts");
    s.section("distill", distill, "distill: the drafter against the target's distributions");
    s.section("evaluate", evaluate, "evaluate: speculative decoding with each drafter");
    s.section("export", export_, "export: a checkpoint as a Hugging Face directory");
    s.section("data", data, "data show / data stats: look into a generated dataset");
    s.section("pipeline", pipeline, "pipeline: all stages in order");
  }

  // Checks that involve more than one option; returns "" or the message and the key it concerns.
  struct Problem {
    std::string key, message;
  };
  std::vector<Problem> cross_checks() const;
};

// A stage's training seed (pretrain.seed, distill.seed) applied: `cfg` with run.seed = seed when seed >= 0, which every
// seed the stage derives follows; unchanged for -1.
Config with_stage_seed(Config cfg, int64_t seed);
// The directory a training run of a stage writes: `dir`, or dir/seed-<seed> for seed >= 0.
std::string seed_dir(const std::string& dir, int64_t seed);

}  // namespace draftalign::config
