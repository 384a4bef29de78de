// Sampling one row of logits: the whole pipeline for one request at one step.
//
//   raw row ──► logprobs (raw model distribution, vLLM's default "raw_logprobs")
//           ──► min_tokens mask, logit_bias, repetition / frequency / presence penalties
//           ──► greedy: argmax                                   (temperature < 1e-5)
//           └─► temperature, top_k, top_p, min_p (HF warper order) ──► one Philox draw
//
// Ranking: tokens are ordered by processed logit, highest first, equal logits by lower token
// id first. Greedy returns the first token of that order; top_k keeps its first k tokens
// (exactly k: ties at the k-th logit go to lower ids, so top_k = 1 is greedy); top_p keeps the
// shortest prefix of it whose mass reaches top_p of the (top_k-renormalised) mass -- token j is
// kept iff the mass ranked before it is < top_p -- as HF's TopPLogitsWarper and vLLM do; min_p
// keeps tokens with p >= min_p * p_max over what is left. The filters never remove the first
// token, so something is always kept.
//
// No full sort of the vocabulary. Three ways, chosen by the parameters only (so a request's
// draws never depend on its neighbours):
//   - top_k <= candidate_limit, or a vocabulary that small: one pass keeps the k best in a heap
//     (groups of 64 whose maximum cannot enter are skipped with one vector compare); top_p and
//     min_p then work on the k sorted candidates.
//   - top_p without top_k: e = exp((l - max) / T) over the row, then rejection sampling against
//     the nucleus (draw_top_p): about one draw plus one masked sum over the row, never a sort.
//   - a larger top_k (or the rejection sampler's fallback): e as above, a histogram of e by its
//     leading bits (8 buckets per octave) with mass and count per bucket, a walk down the
//     buckets to the one holding the top_k / top_p boundary, and a sort of that bucket's tokens
//     only. The kept set is then "e >= a threshold" plus the explicit cut inside the boundary
//     bucket. min_p is a threshold on e everywhere (e_max is 1).
// The draw is inverse-CDF with one uniform u in [0, 1): candidates are scanned in rank order,
// the full row in token-id order (through 1024-token block sums). Mass sums are fp32 partial
// sums gathered in double, so a token whose cumulative mass lies within rounding of the top_p
// boundary may fall either side of it (as it may in the fp32 cumsum of the references).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <qwen/kernels/cpu/sampling_scan.hpp>

#include "qwen/core/error.hpp"
#include "qwen/sampling/logits_processors.hpp"
#include "qwen/sampling/params.hpp"
#include "qwen/sampling/philox.hpp"

namespace qwen::sampling {

struct TokenLogprob {
  std::int32_t token = -1;
  float logprob = 0;
};

struct SampleResult {
  std::int32_t token = -1;
  bool stop = false;  // token is one of params.stop_token_ids
  // Only when params.logprobs is set: log-softmax of the raw row (before any processor or
  // temperature) at the sampled token, and the params.logprobs best tokens by it (rank order).
  float logprob = std::numeric_limits<float>::quiet_NaN();
  std::vector<TokenLogprob> top_logprobs;
};

struct Candidate {
  float logit;
  std::int32_t token;
};
// The sampler's one ranking: higher logit first, then lower token id.
[[nodiscard]] inline bool ranks_before(const Candidate& a, const Candidate& b) noexcept {
  return a.logit > b.logit || (a.logit == b.logit && a.token < b.token);
}

// top_k up to this uses the heap path.
inline constexpr int candidate_limit = 256;

// Working memory of one thread; sized on first use, reused across rows.
struct RowScratch {
  PenaltyScratch penalties;
  std::vector<float> e;              // [vocab] exponentials, zero where filtered out
  std::vector<double> block_sum;     // [block_count(vocab)]
  std::vector<Candidate> candidates; // heap path: the kept tokens in rank order
  std::vector<double> weight;        // heap path: exp((l - max) / T), zero where filtered out
  std::vector<Candidate> bucket_items;
  kernels::cpu::sampling_scan::Histogram histogram;
  bool heap_path = false;            // which of the above holds the prepared distribution
  std::uint32_t rejection_rounds = 0; // the last top_p rejection draw: rounds used (max + 1: fell back)
  double total = 0;                  // mass of the prepared distribution

  void reserve(std::int64_t vocab) {
    if (static_cast<std::int64_t>(e.size()) < vocab) {
      e.resize(static_cast<std::size_t>(vocab));
      block_sum.resize(static_cast<std::size_t>(kernels::cpu::sampling_scan::block_count(vocab)));
    }
  }
};

namespace detail {

namespace scan = kernels::cpu::sampling_scan;

// The n best tokens of row in rank order (n <= row size).
inline void select_top(std::span<const float> row, std::int64_t n, std::vector<Candidate>& out) {
  out.clear();
  if (n <= 0) return;
  const auto worse = [](const Candidate& a, const Candidate& b) { return ranks_before(a, b); };  // heap top = worst
  const auto size = static_cast<std::int64_t>(row.size());
  const auto offer = [&](std::int64_t i) {
    const Candidate c{row[static_cast<std::size_t>(i)], static_cast<std::int32_t>(i)};
    if (static_cast<std::int64_t>(out.size()) < n) {
      out.push_back(c);
      std::push_heap(out.begin(), out.end(), worse);
    } else if (ranks_before(c, out.front())) {
      std::pop_heap(out.begin(), out.end(), worse);
      out.back() = c;
      std::push_heap(out.begin(), out.end(), worse);
    }
  };
  std::int64_t i = 0;
  for (; i + 64 <= size; i += 64) {
    // Scanning in id order, a token equal to the worst kept logit ranks after it: skip unless
    // some element is strictly larger.
    if (static_cast<std::int64_t>(out.size()) == n && !(scan::max64(row.data() + i) > out.front().logit)) continue;
    for (std::int64_t j = i; j < i + 64; ++j) offer(j);
  }
  for (; i < size; ++i) offer(i);
  std::sort(out.begin(), out.end(), ranks_before);
}

// Throws for NaN or +inf in the raw row (-inf is a valid "never"); returns its maximum.
inline float checked_row_max(std::span<const float> row, const std::string& where) {
  const scan::RowMax m = scan::row_max(row.data(), static_cast<std::int64_t>(row.size()));
  if (m.has_non_finite)
    for (std::size_t i = 0; i < row.size(); ++i)
      if (std::isnan(row[i]) || row[i] == std::numeric_limits<float>::infinity())
        throw_error<InvalidArgument>(where, "logit of token ", i, " is ", row[i], " (logits must be finite or -inf)");
  if (m.max == -std::numeric_limits<float>::infinity())
    throw_error<InvalidArgument>(where, "every logit is -inf: no token can be sampled");
  return m.max;
}

// The tokens of histogram bucket b with mass, in rank order. Tokens whose e is 0 (-inf logits,
// or exp underflowed) are left out: they can never be drawn, and bucket 0, which holds them all,
// could otherwise be most of the vocabulary to sort (a masked row with top_k above the count of
// unmasked tokens). A bucket may therefore hold fewer items than its count.
inline void collect_bucket(std::span<const float> row, const float* e, int b, std::vector<Candidate>& items) {
  items.clear();
  for (std::size_t i = 0; i < row.size(); ++i)
    if (e[i] > 0 && scan::bucket_of(e[i]) == b) items.push_back({row[i], static_cast<std::int32_t>(i)});
  std::sort(items.begin(), items.end(), ranks_before);
}

// Heap path: top_k candidates, then top_p and min_p on them.
inline void prepare_candidates(std::span<const float> row, std::int64_t k, const SamplingParams& p, double inv_t,
                               RowScratch& s) {
  select_top(row, k, s.candidates);
  const float top = s.candidates.front().logit;
  s.weight.resize(s.candidates.size());
  double total = 0;
  for (std::size_t i = 0; i < s.candidates.size(); ++i)
    total += s.weight[i] = std::exp(static_cast<double>(s.candidates[i].logit - top) * inv_t);
  if (p.top_p < 1) {
    const double target = p.top_p * total;
    double before = 0;  // mass ranked before candidate i
    for (std::size_t i = 0; i < s.weight.size(); ++i) {
      if (before >= target) {
        std::fill(s.weight.begin() + static_cast<std::ptrdiff_t>(i), s.weight.end(), 0.0);
        break;
      }
      before += s.weight[i];
    }
  }
  double kept = 0;
  for (double& w : s.weight) {
    if (w < p.min_p) w = 0;  // the first weight is 1 = the maximum
    kept += w;
  }
  s.heap_path = true;
  s.total = kept;
}

// Histogram path (any top_k, top_p, min_p).
inline void prepare_full(std::span<const float> row, float max, const SamplingParams& p, double inv_t, RowScratch& s) {
  const auto n = static_cast<std::int64_t>(row.size());
  s.heap_path = false;
  const double total = scan::exp_scaled(row.data(), n, max, static_cast<float>(inv_t), s.e.data(), s.block_sum.data());
  const bool top_k = p.top_k > 0 && p.top_k < n, top_p = p.top_p < 1;
  float threshold = static_cast<float>(p.min_p);
  if (top_k || top_p) {
    scan::histogram(s.e.data(), n, s.histogram);
    const auto& mass = s.histogram.mass;
    const auto& count = s.histogram.count;
    // The cut: tokens of buckets above cut_bucket are kept, of cut_bucket its first cut_keep.
    int cut_bucket = -1;
    std::int64_t cut_keep = 0;
    int sorted_bucket = -1;  // the bucket s.bucket_items holds
    const auto items_of = [&](int b) -> const std::vector<Candidate>& {
      if (sorted_bucket != b) collect_bucket(row, s.e.data(), b, s.bucket_items), sorted_bucket = b;
      return s.bucket_items;
    };
    double kept_mass = 0;  // top_k: the mass top_p renormalises by
    for (int b = scan::histogram_buckets - 1; b >= 0; --b) kept_mass += mass[b];
    if (top_k) {
      std::int64_t above = 0;
      double mass_above = 0;
      int b = scan::histogram_buckets - 1;
      for (; above + count[b] < p.top_k; --b) above += count[b], mass_above += mass[b];
      cut_bucket = b;
      cut_keep = p.top_k - above;
      const auto& items = items_of(b);
      const std::int64_t with_mass = std::min(cut_keep, static_cast<std::int64_t>(items.size()));
      for (std::int64_t j = 0; j < with_mass; ++j) mass_above += s.e[static_cast<std::size_t>(items[static_cast<std::size_t>(j)].token)];
      kept_mass = mass_above;
    }
    if (top_p) {
      const double target = p.top_p * kept_mass;
      double before = 0;
      for (int b = scan::histogram_buckets - 1; b >= std::max(cut_bucket, 0); --b) {
        const bool last = b == cut_bucket;
        if (!last && before + mass[b] < target) {
          before += mass[b];
          continue;
        }
        const auto& items = items_of(b);
        const auto limit = last ? std::min(cut_keep, static_cast<std::int64_t>(items.size())) : static_cast<std::int64_t>(items.size());
        std::int64_t keep = 0;
        while (keep < limit && before < target) before += s.e[static_cast<std::size_t>(items[static_cast<std::size_t>(keep++)].token)];
        if (keep < limit || !last) {  // top_p cuts here (earlier than top_k, or top_k is off)
          cut_bucket = b;
          cut_keep = keep;
        }
        break;
      }
    }
    if (cut_bucket >= 0) {
      const auto& items = items_of(cut_bucket);
      for (std::size_t j = static_cast<std::size_t>(cut_keep); j < items.size(); ++j) s.e[static_cast<std::size_t>(items[j].token)] = 0;
      threshold = std::max(threshold, scan::bucket_floor(cut_bucket));
      s.total = scan::keep_at_least(s.e.data(), n, threshold, s.block_sum.data());
      return;
    }
  }
  s.total = threshold > 0 ? scan::keep_at_least(s.e.data(), n, threshold, s.block_sum.data()) : total;
}

// Inverse CDF over e[0, n) restricted to the admitted tokens, whose per-block masses are
// block_sum and total mass `total`: the first admitted token whose cumulative mass (in id
// order) exceeds u * total. Rounding can leave the target past the end: then the last admitted
// token with mass.
template <class Admitted>
std::int64_t draw_blocks(const float* e, std::int64_t n, const double* block_sum, double total, double u,
                         const Admitted& admitted) {
  const double target = u * total;
  const std::int64_t blocks = scan::block_count(n);
  double before = 0;
  std::int64_t last = -1;
  for (std::int64_t b = 0; b < blocks; ++b) {
    const double bs = block_sum[b];
    if (bs == 0) continue;
    if (before + bs <= target && b + 1 < blocks) {  // the target lies beyond this block
      before += bs;
      continue;
    }
    for (std::int64_t i = b * scan::block; i < std::min(n, (b + 1) * scan::block); ++i) {
      if (e[i] == 0 || !admitted(i)) continue;
      last = i;
      before += e[i];
      if (before > target) return i;
    }
  }
  if (last < 0)
    for (std::int64_t i = n - 1; i >= 0 && last < 0; --i)
      if (e[i] > 0 && admitted(i)) last = i;
  return last;
}

// The token of draw u in [0, 1) from the prepared distribution.
inline std::int32_t draw_prepared(const RowScratch& s, std::int64_t n, double u) {
  if (s.heap_path) {
    const double target = u * s.total;
    double before = 0;
    std::int32_t last = s.candidates.front().token;
    for (std::size_t i = 0; i < s.candidates.size(); ++i) {
      if (s.weight[i] == 0) continue;
      last = s.candidates[i].token;
      before += s.weight[i];
      if (before > target) return last;
    }
    return last;  // rounding put the target past the end: the last kept token
  }
  return static_cast<std::int32_t>(draw_blocks(s.e.data(), n, s.block_sum.data(), s.total, u, [](std::int64_t) { return true; }));
}

// A bound on rejection rounds before the exact histogram path takes over (each round costs two
// passes over the row; see draw_top_p).
inline constexpr std::uint32_t max_rejection_rounds = 16;

// top_p (and min_p) without top_k, by rejection instead of finding the nucleus: draw j from the
// support (tokens with e >= min_p that rank before the pivot, at first all of them); accept it if
// the mass ranked before j over the whole distribution is < top_p * total, i.e. j is in the
// nucleus. Otherwise every token ranked at or after j is outside the nucleus too (it is a
// prefix of the ranking), so j becomes the pivot and the draw is repeated on the smaller
// support. The accepted token is distributed as the support restricted to the nucleus, which
// is exactly the filtered, renormalised distribution. The best token is always accepted.
// FlashInfer's top-p rejection sampling pivots in the same spirit. Round r uses Philox draw
// (seed, step, r). e and block_sum hold exp_scaled's output; total its sum.
inline std::int32_t draw_top_p(std::span<const float> row, float max, const SamplingParams& p, double inv_t,
                               double total, std::uint64_t seed, std::uint64_t step, RowScratch& s) {
  const auto n = static_cast<std::int64_t>(row.size());
  const float* e = s.e.data();
  const auto floor = static_cast<float>(p.min_p);
  const double target = p.top_p * total;
  float pivot = -1;  // admits everything
  std::int64_t pivot_index = 0;
  double support = floor > 0 ? scan::sum_ranked_before(e, n, pivot, pivot_index, floor, s.block_sum.data()) : total;
  for (std::uint32_t round = 0; round < max_rejection_rounds; ++round) {
    const std::int64_t j = draw_blocks(e, n, s.block_sum.data(), support, uniform_draw(seed, step, round), [&](std::int64_t i) {
      return e[i] >= floor && (e[i] > pivot || (e[i] == pivot && i < pivot_index));
    });
    if (scan::sum_ranked_before(e, n, e[j], j, 0.0f) < target) {
      s.rejection_rounds = round + 1;
      return static_cast<std::int32_t>(j);
    }
    pivot = e[j];
    pivot_index = j;
    support = scan::sum_ranked_before(e, n, pivot, pivot_index, floor, s.block_sum.data());
  }
  s.rejection_rounds = max_rejection_rounds + 1;
  prepare_full(row, max, p, inv_t, s);
  return draw_prepared(s, n, uniform_draw(seed, step, max_rejection_rounds));
}

// 1 / temperature for a non-greedy p, clamped to at least FLT_MIN so that a huge temperature
// still maps -inf to e = 0 ((-inf - max) * 0 would be NaN) when the scan multiplies in fp32.
[[nodiscard]] inline double inverse_temperature(const SamplingParams& p) noexcept {
  return std::max(1.0 / p.temperature, static_cast<double>(std::numeric_limits<float>::min()));
}

// Prepares the filtered distribution of a processed row (max = its maximum, not -inf).
inline void prepare(std::span<const float> row, float max, const SamplingParams& p, RowScratch& s) {
  const auto n = static_cast<std::int64_t>(row.size());
  s.reserve(n);
  const double inv_t = inverse_temperature(p);
  const std::int64_t k = p.top_k > 0 && p.top_k < n ? p.top_k : n;  // tokens top_k lets through
  if (k <= candidate_limit)  // a small top_k, or a small vocabulary (then the heap is a sort)
    prepare_candidates(row, k, p, inv_t, s);
  else
    prepare_full(row, max, p, inv_t, s);
}

// The sampled token of a processed row (max = its maximum) for non-greedy parameters.
inline std::int32_t draw_token(std::span<const float> row, float max, const SamplingParams& p, std::uint64_t seed,
                               std::uint64_t step, RowScratch& s) {
  const auto n = static_cast<std::int64_t>(row.size());
  const bool top_k = p.top_k > 0 && p.top_k < n;
  if (top_k || p.top_p >= 1) {
    prepare(row, max, p, s);
    return draw_prepared(s, n, uniform_draw(seed, step));
  }
  s.reserve(n);
  if (n <= candidate_limit) {  // small vocabularies: the heap is a sort
    prepare(row, max, p, s);
    return draw_prepared(s, n, uniform_draw(seed, step));
  }
  const double inv_t = inverse_temperature(p);
  const double total = scan::exp_scaled(row.data(), n, max, static_cast<float>(inv_t), s.e.data(), s.block_sum.data());
  return draw_top_p(row, max, p, inv_t, total, seed, step, s);
}

}  // namespace detail

// The distribution the sampler draws from for a processed row with sampling (non-greedy)
// parameters p: (token, probability) for every kept token, by token id. For tests and tools.
[[nodiscard]] inline std::vector<std::pair<std::int32_t, double>> filtered_distribution(std::span<const float> row,
                                                                                       const SamplingParams& p,
                                                                                       RowScratch& scratch) {
  const float max = detail::checked_row_max(row, "");
  detail::prepare(row, max, p, scratch);
  std::vector<std::pair<std::int32_t, double>> out;
  if (scratch.heap_path) {
    for (std::size_t i = 0; i < scratch.candidates.size(); ++i)
      if (scratch.weight[i] > 0) out.emplace_back(scratch.candidates[i].token, scratch.weight[i] / scratch.total);
    std::sort(out.begin(), out.end());
  } else {
    for (std::size_t i = 0; i < row.size(); ++i)
      if (scratch.e[i] > 0) out.emplace_back(static_cast<std::int32_t>(i), scratch.e[i] / scratch.total);
  }
  return out;
}

// Samples one row. row: [vocab] logits, read and temporarily edited, unchanged on return.
// `where` starts error messages (e.g. "row 3: ").
[[nodiscard]] inline SampleResult sample_row(std::span<float> row, const RowRequest& request, RowScratch& scratch,
                                             const std::string& where = "") {
  if (request.params == nullptr) throw_error<InvalidArgument>(where, "request without sampling parameters");
  const SamplingParams& p = *request.params;
  const auto vocab = static_cast<std::int64_t>(row.size());
  validate(p, vocab, where);
  scratch.reserve(vocab);
  SampleResult result;

  // Raw logprobs come first, from the row as the model produced it.
  const float raw_max = detail::checked_row_max(row, where);
  double log_normaliser = 0;
  if (p.logprobs) {
    const double sum = kernels::cpu::sampling_scan::exp_scaled(row.data(), vocab, raw_max, 1.0f, scratch.e.data(),
                                                               scratch.block_sum.data());
    log_normaliser = raw_max + std::log(sum);
    detail::select_top(row, std::min<std::int64_t>(*p.logprobs, vocab), scratch.candidates);
    result.top_logprobs.reserve(scratch.candidates.size());
    for (const Candidate& c : scratch.candidates)
      result.top_logprobs.push_back({c.token, static_cast<float>(c.logit - log_normaliser)});
  }

  RowEdits edits(row);
  apply_logits_processors(row, request, scratch.penalties, edits, where);
  const float max = edits.empty() ? raw_max : detail::checked_row_max(row, where);
  if (p.greedy()) {
    result.token = static_cast<std::int32_t>(kernels::cpu::sampling_scan::first_index_of(row.data(), vocab, max));
  } else {
    result.token = detail::draw_token(row, max, p, request.seed, request.output_tokens.size(), scratch);
  }
  if (p.logprobs) result.logprob = static_cast<float>(edits.original(result.token) - log_normaliser);
  result.stop = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), result.token) != p.stop_token_ids.end();
  return result;
}

}  // namespace qwen::sampling
