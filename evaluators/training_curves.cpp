// training_curves.cpp: the training curves of drafters that come from a training run, read from its metrics.jsonl
// (report.h's training_curves).
#include <sstream>

#include "common/fs.h"
#include "evaluators/report.h"
#include "train/layout.h"

namespace draftalign::eval {

using nlohmann::json;
namespace stdfs = std::filesystem;

json training_curves(const std::vector<std::string>& dirs, const std::vector<std::string>& names) {
  json out = json::array();
  for (size_t i = 0; i < dirs.size(); ++i) {
    stdfs::path dir = stdfs::path(dirs[i]).lexically_normal();
    if (dir.filename().empty()) dir = dir.parent_path();
    json checkpoint_step = nullptr;
    stdfs::path run = dir;
    const std::string base = dir.filename().string();
    if (base == train::kFinalDir) {
      run = dir.parent_path();
    } else if (base.rfind("step-", 0) == 0 && dir.parent_path().filename() == train::kCheckpointsDir) {
      run = dir.parent_path().parent_path();
      checkpoint_step = std::atoll(base.c_str() + 5);
    }
    const stdfs::path file = run / "metrics.jsonl";
    if (!stdfs::exists(file)) continue;
    json train = {{"step", json::array()}, {"loss", json::array()}}, val = {{"step", json::array()}};
    std::vector<json> val_records;  // the val_* fields of each validation record
    int64_t skipped = 0;
    std::istringstream in(fs::read_file(file));
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      const json r = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!r.is_object() || !r.contains("step") || !r["step"].is_number_integer()) {
        ++skipped;
        continue;
      }
      if (r.contains("loss") && r["loss"].is_number()) {
        train["step"].push_back(r["step"]);
        train["loss"].push_back(r["loss"]);
      }
      json v = json::object();
      for (const auto& [k, x] : r.items())
        if (k.rfind("val_", 0) == 0 && x.is_number()) v[k] = x;
      if (!v.empty()) val["step"].push_back(r["step"]), val_records.push_back(std::move(v));
    }
    for (const json& v : val_records)  // one series per field; null where a record lacks it
      for (const auto& [k, x] : v.items())
        if (!val.contains(k)) {
          val[k] = json::array();
          for (const json& w : val_records) val[k].push_back(w.contains(k) ? w[k] : json(nullptr));
        }
    out.push_back({{"name", names[i]},
                   {"metrics", file.string()},
                   {"checkpoint_step", checkpoint_step},
                   {"train", train},
                   {"validation", val},
                   {"skipped_lines", skipped}});
  }
  return out;
}

}  // namespace draftalign::eval
