// Replays a fuzz target's seed corpus without libFuzzer (gcc builds, CI): every seed, then
// deterministic mutations of each (bit flips, truncations, byte insertions, splices), so the
// parsers' hostile-input paths run under ASan/UBSan on every test run.
#include <dirent.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::string> LoadCorpus(const std::string& dir) {
  std::vector<std::string> seeds;
  DIR* d = opendir(dir.c_str());
  if (!d) return seeds;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    seeds.push_back(ss.str());
  }
  closedir(d);
  return seeds;
}

void Run(const std::string& s) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR [MUTATIONS_PER_SEED]\n", argv[0]);
    return 2;
  }
  auto seeds = LoadCorpus(argv[1]);
  if (seeds.empty()) {
    std::fprintf(stderr, "no seeds in %s\n", argv[1]);
    return 1;
  }
  int per_seed = argc > 2 ? std::atoi(argv[2]) : 2000;
  std::mt19937 rng(12345);
  size_t runs = 0;
  for (const auto& seed : seeds) {
    Run(seed);
    ++runs;
    for (int i = 0; i < per_seed; ++i) {
      std::string m = seed;
      switch (rng() % 5) {
        case 0:
          if (!m.empty()) m[rng() % m.size()] ^= static_cast<char>(1u << (rng() % 8));
          break;
        case 1:
          m.resize(m.empty() ? 0 : rng() % m.size());
          break;
        case 2:
          m.insert(m.begin() + (m.empty() ? 0 : rng() % m.size()), static_cast<char>(rng()));
          break;
        case 3: {
          const auto& other = seeds[rng() % seeds.size()];
          m = m.substr(0, m.empty() ? 0 : rng() % m.size()) +
              other.substr(other.empty() ? 0 : rng() % other.size());
          break;
        }
        default:
          for (int k = 0; k < 4 && !m.empty(); ++k) m[rng() % m.size()] = static_cast<char>(rng());
      }
      Run(m);
      ++runs;
    }
  }
  std::printf("replayed %zu inputs from %zu seeds: no crash\n", runs, seeds.size());
  return 0;
}
