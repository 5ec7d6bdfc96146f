#include "evaluators/stats.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "common/error.h"

namespace draftalign::eval {

SeedCounts SeedCounts::one(std::vector<double> num, std::vector<double> den) {
  SeedCounts s;
  s.num.push_back(std::move(num));
  s.den.push_back(std::move(den));
  return s;
}

double SeedCounts::ratio() const {
  double a = 0, b = 0;
  for (size_t s = 0; s < num.size(); ++s) {
    a += std::accumulate(num[s].begin(), num[s].end(), 0.0);
    b += std::accumulate(den[s].begin(), den[s].end(), 0.0);
  }
  return b > 0 ? a / b : 0.0;
}

namespace {

void check_counts(const SeedCounts& x, size_t clusters, const char* side) {
  DA_CHECK(x.seeds() >= 1 && x.den.size() == x.seeds(), "bootstrap: ", side, " has ", x.seeds(), " seed rows of ",
           "numerators and ", x.den.size(), " of denominators");
  for (size_t s = 0; s < x.seeds(); ++s)
    DA_CHECK(x.num[s].size() == clusters && x.den[s].size() == clusters, "bootstrap: ", side, " seed ", s, " has ",
             x.num[s].size(), " numerators and ", x.den[s].size(), " denominators for ", clusters, " clusters");
}

// Multiplicities of a draw of n out of n with replacement; a single item is always drawn once.
void draw(std::vector<double>& m, std::mt19937_64& rng) {
  const size_t n = m.size();
  if (n == 1) {
    m[0] = 1;
    return;
  }
  std::fill(m.begin(), m.end(), 0.0);
  for (size_t i = 0; i < n; ++i) m[rng() % n] += 1;
}

// The pooled ratio of x under cluster weights w and seed multiplicities m.
double pooled(const SeedCounts& x, const std::vector<double>& w, const std::vector<double>& m) {
  double a = 0, b = 0;
  for (size_t s = 0; s < x.seeds(); ++s) {
    if (m[s] == 0) continue;
    double sa = 0, sb = 0;
    for (size_t c = 0; c < w.size(); ++c) sa += w[c] * x.num[s][c], sb += w[c] * x.den[s][c];
    a += m[s] * sa, b += m[s] * sb;
  }
  return b > 0 ? a / b : 0.0;
}

}  // namespace

std::vector<double> bootstrap_draws(const SeedCounts& a, const SeedCounts* b, int64_t resamples, uint64_t seed,
                                    Contrast contrast) {
  const size_t n = a.clusters();
  DA_CHECK(n >= 1 && resamples >= 1, "bootstrap: ", n, " clusters, ", resamples, " resamples");
  check_counts(a, n, "the drafter");
  if (b != nullptr) check_counts(*b, n, "the drafter compared");
  std::mt19937_64 rng(seed);
  std::vector<double> w(n), ma(a.seeds()), mb(b != nullptr ? b->seeds() : 0), out;
  out.reserve(static_cast<size_t>(resamples));
  for (int64_t r = 0; r < resamples; ++r) {
    draw(w, rng);
    draw(ma, rng);
    const double x = pooled(a, w, ma);
    if (b == nullptr) {
      out.push_back(x);
      continue;
    }
    draw(mb, rng);
    const double y = pooled(*b, w, mb);
    out.push_back(contrast == Contrast::kDifference ? x - y : (y > 0 ? x / y : 0.0));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Interval percentile_interval(const std::vector<double>& sorted, double level) {
  DA_CHECK(!sorted.empty() && level > 0 && level < 1, "percentile_interval: ", sorted.size(), " draws, level ", level);
  auto at = [&](double q) {
    const double x = q * static_cast<double>(sorted.size() - 1);
    const size_t i = static_cast<size_t>(x);
    const double f = x - static_cast<double>(i);
    return i + 1 < sorted.size() ? sorted[i] * (1 - f) + sorted[i + 1] * f : sorted[i];
  };
  return {at((1 - level) / 2), at((1 + level) / 2)};
}

double bootstrap_p_value(const std::vector<double>& draws) {
  DA_CHECK(!draws.empty(), "bootstrap_p_value: no draws");
  double below = 0, above = 0;
  for (double d : draws) below += d <= 0, above += d >= 0;
  const double n = static_cast<double>(draws.size());
  return std::min(1.0, 2 * std::min(below + 1, above + 1) / (n + 1));
}

std::vector<double> holm_adjust(const std::vector<double>& p) {
  const size_t m = p.size();
  std::vector<size_t> order(m);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] < p[b]; });
  std::vector<double> out(m);
  double running = 0;
  for (size_t i = 0; i < m; ++i) {
    running = std::max(running, std::min(1.0, static_cast<double>(m - i) * p[order[i]]));
    out[order[i]] = running;
  }
  return out;
}

std::vector<double> cluster_sums(const std::vector<double>& values, const std::vector<int64_t>& cluster_of,
                                 int64_t n_clusters) {
  DA_CHECK(values.size() == cluster_of.size(), "cluster_sums: ", values.size(), " values, ", cluster_of.size(),
           " cluster indices");
  std::vector<double> out(static_cast<size_t>(n_clusters), 0.0);
  for (size_t i = 0; i < values.size(); ++i) {
    DA_CHECK(cluster_of[i] >= 0 && cluster_of[i] < n_clusters, "cluster_sums: cluster ", cluster_of[i], " of ",
             n_clusters);
    out[static_cast<size_t>(cluster_of[i])] += values[i];
  }
  return out;
}

Interval bootstrap_ratio(const std::vector<double>& num, const std::vector<double>& den, int64_t resamples,
                         uint64_t seed, double level) {
  DA_CHECK(num.size() == den.size(), "bootstrap_ratio: ", num.size(), " numerators, ", den.size(), " denominators");
  return percentile_interval(bootstrap_draws(SeedCounts::one(num, den), nullptr, resamples, seed), level);
}

Interval bootstrap_ratio_difference(const std::vector<double>& num_a, const std::vector<double>& den_a,
                                    const std::vector<double>& num_b, const std::vector<double>& den_b,
                                    int64_t resamples, uint64_t seed, double level) {
  const size_t n = num_a.size();
  DA_CHECK(den_a.size() == n && num_b.size() == n && den_b.size() == n,
           "bootstrap_ratio_difference: both sides need the same items");
  const SeedCounts b = SeedCounts::one(num_b, den_b);
  return percentile_interval(bootstrap_draws(SeedCounts::one(num_a, den_a), &b, resamples, seed), level);
}

}  // namespace draftalign::eval
