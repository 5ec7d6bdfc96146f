#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <algorithm>
#include <functional>
#include <sstream>

#include "common/log.h"
#include "common/metrics.h"
#include "test_util.h"

namespace draftalign {
namespace {

TEST(FormatDuration, MinutesAndHours) {
  EXPECT_EQ(log::format_duration(0), "0:00");
  EXPECT_EQ(log::format_duration(83), "1:23");
  EXPECT_EQ(log::format_duration(3723), "1:02:03");
  EXPECT_EQ(log::format_duration(-1), "?");
  EXPECT_EQ(log::format_duration(1.0 / 0.0), "?");
}

TEST(RenderProgress, BarRateAndEta) {
  // 25 of 100 in 5 s: 5 it/s, 75 left -> 15 s.
  const std::string line = log::render_progress("pretrain", 25, 100, 5.0, 20, "step", "loss 2.50");
  EXPECT_NE(line.find("25/100"), std::string::npos) << line;
  EXPECT_NE(line.find("[#####...............]"), std::string::npos) << line;
  EXPECT_NE(line.find("25.0%"), std::string::npos) << line;
  EXPECT_NE(line.find("5 step/s"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 0:15"), std::string::npos) << line;
  EXPECT_NE(line.find("loss 2.50"), std::string::npos) << line;
}

TEST(RenderProgress, ResumedWorkIsNotInTheRateOrEta) {
  // Resumed at step 190 of 250, 10 steps done here in 10 s: 1 step/s, 50 left -> 50 s (not 200/10 = 20/s -> 3 s).
  const std::string line = log::render_progress("distill", 200, 250, 10.0, 0, "step", "", /*skipped=*/190);
  EXPECT_NE(line.find("1 step/s"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 0:50"), std::string::npos) << line;
  const std::string fresh = log::render_progress("distill", 200, 250, 10.0, 0, "step", "");
  EXPECT_NE(fresh.find("ETA 0:03"), std::string::npos) << fresh;  // 50 left at 20 step/s: 2.5 s
}

TEST(RenderProgress, PlainFormHasNoBarAndUnknownTotalNoEta) {
  const std::string plain = log::render_progress("gen", 10, 40, 2.0, 0, "tok", "");
  EXPECT_EQ(plain.find('['), std::string::npos) << plain;
  const std::string open = log::render_progress("gen", 10, 0, 2.0, 20, "tok", "");
  EXPECT_EQ(open.find("ETA"), std::string::npos) << open;
  EXPECT_NE(open.find("5 tok/s"), std::string::npos) << open;
}

std::string capture(const std::function<void(std::FILE*)>& body) {
  std::FILE* f = std::tmpfile();
  body(f);
  return testing::read_and_close(f);
}

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

TEST(Progress, NonTtyPrintsPlainLinesAtTheInterval) {
  // Interval 0: every update is a line; then the final line.
  const std::string every = capture([](std::FILE* f) {
    log::Progress p("stage", 3, "it", f, /*force_tty=*/0, /*line_interval_s=*/0.0);
    for (int i = 1; i <= 3; ++i) p.update(i);
    p.finish("done");
  });
  EXPECT_EQ(count_lines(every), 4) << every;
  EXPECT_EQ(every.find('\r'), std::string::npos) << "no carriage returns in a log file";
  EXPECT_NE(every.find("3/3"), std::string::npos);
  // A long interval: only the first update and the final line.
  const std::string sparse = capture([](std::FILE* f) {
    log::Progress p("stage", 100, "it", f, 0, 3600.0);
    for (int i = 1; i <= 100; ++i) p.update(i);
  });
  EXPECT_EQ(count_lines(sparse), 2) << sparse;
}

TEST(Progress, TtyRedrawsInPlace) {
  const std::string out = capture([](std::FILE* f) {
    log::Progress p("stage", 10, "it", f, /*force_tty=*/1, 10.0);
    p.update(5);
    p.finish();
  });
  EXPECT_NE(out.find('\r'), std::string::npos);
  EXPECT_EQ(count_lines(out), 1) << "one line, redrawn";
}

TEST(Progress, SilentOnOtherRanks) {
  log::set_rank(1, 2);
  const std::string out = capture([](std::FILE* f) {
    log::Progress p("stage", 10, "it", f, 0, 0.0);
    p.update(5);
  });
  log::set_rank(0, 1);
  EXPECT_TRUE(out.empty()) << out;
}

TEST(MetricsLog, OneJsonObjectPerLineAppended) {
  testing::ScratchDir dir;
  const auto path = dir / "logs/metrics.jsonl";
  {
    MetricsLog m(path);
    m.write({{"step", 1}, {"loss", 2.5}});
    m.write({{"step", 2}, {"loss", 2.25}});
  }
  {
    MetricsLog m(path);  // a resumed run appends
    m.write({{"step", 3}, {"loss", 2.0}});
  }
  std::istringstream in(testing::read_text(path));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    ++n;
    EXPECT_EQ(j["step"].get<int>(), n);
    EXPECT_TRUE(j.contains("time"));
  }
  EXPECT_EQ(n, 3);
}

}  // namespace
}  // namespace draftalign
