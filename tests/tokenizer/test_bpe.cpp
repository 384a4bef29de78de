// bpe_merge_heap (long words) against bpe_merge_scan, the definition (lowest rank first, leftmost
// among equal ranks), on random merge tables and words up to 3,000 symbols, runs of one symbol
// (where overlapping pairs make "leftmost" matter) included.
#include <cstdint>
#include <random>
#include <vector>

#include <catch2/catch.hpp>
#include <qwen/tokenizer/bpe.hpp>

namespace {

using qwen::tokenizer::MergeTable;
using qwen::tokenizer::TokenId;

// A merge table over `alphabet` base ids: each merge joins two existing ids into a new one, in
// rank order, so later merges build on earlier ones as in a trained BPE.
MergeTable random_merges(int alphabet, int count, std::mt19937& rng) {
  MergeTable table(static_cast<std::size_t>(count));
  TokenId next_id = alphabet;
  for (std::uint32_t rank = 0; static_cast<int>(rank) < count;) {
    std::uniform_int_distribution<TokenId> pick(0, next_id - 1);
    const TokenId l = rng() % 3 == 0 ? pick(rng) % alphabet : pick(rng), r = rng() % 3 == 0 ? pick(rng) % alphabet : pick(rng);
    if (table.insert(l, r, rank, next_id)) ++rank, ++next_id;
  }
  return table;
}

}  // namespace

TEST_CASE("tokenizer bpe: the heap merge equals the scan merge on random tables and long words", "[tokenizer][bpe]") {
  std::mt19937 rng(20261128);
  std::vector<std::uint32_t> ranks;
  int compared = 0, changed = 0;
  for (int table_index = 0; table_index < 8; ++table_index) {
    const int alphabet = 2 + table_index % 5;
    const MergeTable merges = random_merges(alphabet, 40 + 30 * table_index, rng);
    for (const int length : {1, 2, 3, 17, 65, 97, 255, 1000, 3000}) {
      for (int kind = 0; kind < 3; ++kind) {
        std::vector<TokenId> word(static_cast<std::size_t>(length));
        for (auto& id : word)  // random; one symbol repeated; two symbols alternating with noise
          id = kind == 0 ? static_cast<TokenId>(rng() % alphabet) : kind == 1 ? 0 : static_cast<TokenId>((&id - word.data()) % 2 + (rng() % 7 == 0));
        std::vector<TokenId> scan = word, heap = word;
        qwen::tokenizer::bpe_merge_scan(scan, merges, ranks);
        qwen::tokenizer::bpe_merge_heap(heap, merges);
        INFO("table " << table_index << ", length " << length << ", kind " << kind);
        REQUIRE(heap == scan);
        changed += scan.size() < word.size();
        ++compared;
      }
    }
  }
  CHECK(compared == 8 * 9 * 3);
  CHECK(changed > compared / 2);  // the tables really merge: the comparison is not vacuous
}
