// stats.h: the statistics behind every interval and "significant" in a report. Torch-free.
//
// The unit is the cluster, not the turn. The two turns of one MT-bench question share the question (prompt lookup's
// tau is 1.26 on turn 1 and 1.78 on turn 2 of the same questions), so they are not independent draws: a bootstrap
// that resampled turns would treat 160 turns as 160 draws and give intervals too narrow. Every count here is a
// cluster total (all turns of a question summed), and the clusters are resampled.
//
// A method trained with several seeds is a second level. Its row pools the seeds (the ratio of totals over every
// seed and cluster), and its interval is a two-level bootstrap: each resample draws the clusters with replacement and
// then, independently, the seeds with replacement, so the interval carries the spread between training runs as well
// as the spread between questions. Two drafters are compared on the same cluster draw (paired over questions) with
// each side's seeds drawn on their own (two training runs share no seed-level pairing).
//
// Significance: a two-sided bootstrap p-value per comparison (how often the resampled difference falls on either
// side of 0), Holm's step-down correction over the family of comparisons a report makes, and intervals at the
// Bonferroni level 1 - 0.05 / m for the same family (an interval that excludes 0 there is significant under Holm too).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace draftalign::eval {

// A 95% (or `level`) percentile interval.
struct Interval {
  double lo = 0, hi = 0;
};

// One drafter's counts for a ratio of totals (tau = emitted tokens / target calls, acceptance = accepted / drafts):
// num[s][c], den[s][c] for training seed s and cluster c. A drafter trained once (or prompt lookup) has one seed row.
struct SeedCounts {
  std::vector<std::vector<double>> num, den;

  static SeedCounts one(std::vector<double> num, std::vector<double> den);  // a single seed
  size_t seeds() const { return num.size(); }
  size_t clusters() const { return num.empty() ? 0 : num[0].size(); }
  double ratio() const;  // pooled over every seed and cluster; 0 when the denominator is 0
};

// How two drafters' ratios are compared: a - b, or a / b (a speed-up: tokens/s over tokens/s).
enum class Contrast { kDifference, kRatio };

// The sorted bootstrap draws of a's pooled ratio (b null), or of ratio(a) - ratio(b) / ratio(a) / ratio(b). Each of the
// `resamples` draws takes the clusters with replacement (one draw for both sides) and, for a side with more than one
// seed, its seeds with replacement. Deterministic for `seed`; with single-seed sides the cluster draws are those of
// bootstrap_ratio.
std::vector<double> bootstrap_draws(const SeedCounts& a, const SeedCounts* b, int64_t resamples, uint64_t seed,
                                    Contrast contrast = Contrast::kDifference);

// The percentile interval of sorted draws (linear interpolation between order statistics).
Interval percentile_interval(const std::vector<double>& sorted, double level = 0.95);

// The two-sided bootstrap p-value of "the difference is 0": 2 x the smaller of the shares of draws <= 0 and >= 0
// (each counted with the +1 of a Monte Carlo p-value, so never 0), at most 1.
double bootstrap_p_value(const std::vector<double>& draws);

// Holm's step-down adjusted p-values, in the input's order: with p sorted ascending, p_(i) becomes
// min(1, max over j <= i of (m - j + 1) p_(j)). A comparison is significant at level a when its adjusted p < a.
std::vector<double> holm_adjust(const std::vector<double>& p);

// Item values summed per cluster: out[cluster_of[i]] += values[i], for n_clusters clusters.
std::vector<double> cluster_sums(const std::vector<double>& values, const std::vector<int64_t>& cluster_of,
                                 int64_t n_clusters);

// One-seed shorthands: the interval of sum(num) / sum(den) over items that are clusters, and of the paired difference.
Interval bootstrap_ratio(const std::vector<double>& num, const std::vector<double>& den, int64_t resamples,
                         uint64_t seed, double level = 0.95);
Interval bootstrap_ratio_difference(const std::vector<double>& num_a, const std::vector<double>& den_a,
                                    const std::vector<double>& num_b, const std::vector<double>& den_b,
                                    int64_t resamples, uint64_t seed, double level = 0.95);

}  // namespace draftalign::eval
