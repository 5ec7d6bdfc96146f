// prompts.h: instruction-prompt files for `generate` (training prompts) and `evaluate` (MT-bench and the like).
// One JSON object per line, in any of the shapes public instruction sets use:
//   {"instruction": "...", "input": "..."}                        Alpaca / Dolly (input optional, appended)
//   {"conversations": [{"from": "human", "value": "..."}, ...]}   ShareGPT (from: system/human/gpt, or role/content)
//   {"messages": [{"role": "user", "content": "..."}, ...]}       OpenAI / HF chat
//   {"turns": ["...", "..."]}                                     MT-bench (the first turn is the prompt; the later
//                                                                 ones are kept for evaluate, which asks each after
//                                                                 the target's own answer to the turn before)
//   {"prompt": "..."}                                             a bare prompt
// An optional "system" string adds a system message; an optional "cluster" groups prompts for evaluate's intervals. A conversation is cut after its last user turn: the target
// answers that. Blank lines are skipped; a malformed line is an Error naming file:line, or is skipped and counted
// when `skip_bad` (generate.on_bad_record = skip).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/chat.h"

namespace draftalign::data {

struct Prompt {
  int64_t index = 0;  // position among all prompts loaded (its stable id within a run)
  std::string id;     // the record's "id" / "question_id" when it has one, else "file:line"
  std::vector<tok::Message> messages;
  std::vector<std::string> later_turns;  // MT-bench: the user turns after the first
  std::string category;                  // the record's "category" (MT-bench: writing, roleplay, ...), or ""
  // What evaluate's bootstrap resamples together: the record's "cluster" (a string or integer; e.g. prompts written
  // from one source document), else its id, so every turn of one prompt (an MT-bench question) is one cluster.
  std::string cluster;
};

struct PromptSet {
  std::vector<Prompt> prompts;
  int64_t skipped = 0;            // malformed lines skipped (skip_bad)
  std::string first_skip_reason;  // "file:line: why" of the first one
};

// `max_prompts` > 0 keeps only the first that many. With `weights` (one per file), the files are interleaved in that
// ratio before the cut: the next prompt comes from the file with the smallest (taken + 1) / weight (the first such
// file on a tie), so every prefix holds each file's share to within one prompt; a file that runs dry leaves the rest
// to the others, and weight 0 leaves a file out.
PromptSet load_prompts(const std::vector<std::string>& files, bool skip_bad, int64_t max_prompts = 0,
                       const std::vector<double>& weights = {});

// One line of a chat JSONL file ({"messages": [...]} or ShareGPT {"conversations": [...]}, optional "system") as its
// whole conversation, for `data import`: it needs an assistant turn, and each assistant turn follows a user turn.
// Errors name `where` (file:line) and the message.
std::vector<tok::Message> parse_conversation(const std::string& line, const std::string& where);

}  // namespace draftalign::data
