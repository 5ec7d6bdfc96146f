// sweep.jsonl, an evaluation's progress (evaluate resumes from it). The fingerprint is taken from the input's first
// line when it has one, so that the records after it are read, as on a resume with the same inputs.
#include <nlohmann/json.hpp>

#include "evaluators/report.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftalign;
  const std::string_view bytes = fuzz::text(data, size);
  const auto file = fuzz::input_file("sweep.jsonl", bytes);
  const auto head = nlohmann::json::parse(bytes.substr(0, bytes.find('\n')), nullptr, false);
  std::string fingerprint = "fuzz";
  if (head.is_object() && head.contains("fingerprint") && head["fingerprint"].is_string()) fingerprint = head["fingerprint"];
  fuzz::expect_only_errors([&] { eval::SweepLog(file, fingerprint); });
  return 0;
}
