// The loop of the read-limit rows (bench/calls.py): one load from each of a list of a float32 map's cache lines,
// nothing computed but a sum that keeps the loads, nothing written.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <vector>

// Loads the first float of each 64-byte line lines[i] of map's storage (lines: int32 [L], line i = floats [16 i,
// 16 i + 16)), the list split over torch's threads; returns their sum. A load brings its whole line from memory.
double read_lines(const torch::Tensor& map, const torch::Tensor& lines) {
  TORCH_CHECK(map.scalar_type() == at::kFloat && map.device().is_cpu(), "map: a float32 CPU tensor, got ",
              map.scalar_type(), " on ", map.device());
  TORCH_CHECK(lines.scalar_type() == at::kInt && lines.dim() == 1 && lines.is_contiguous(),
              "lines: a contiguous int32 [L] tensor of line numbers");
  // A line is listed by its first float: the storage's last line may be partial.
  const int64_t count = lines.numel(), storage_lines = (static_cast<int64_t>(map.storage().nbytes()) + 63) / 64;
  TORCH_CHECK(storage_lines > 0, "map: an empty storage has no lines to read");
  const int32_t* index = lines.const_data_ptr<int32_t>();
  const float* base = static_cast<const float*>(map.storage().data());
  std::vector<double> sums(at::get_num_threads(), 0.0);
  std::vector<uint32_t> outside(at::get_num_threads(), 0);  // whether a line number was past the storage
  const uint32_t last = static_cast<uint32_t>(storage_lines - 1);
  at::parallel_for(0, count, 1024, [&](int64_t begin, int64_t end) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // four chains: the adds never hold the loads back
    uint32_t past = 0;
    auto load = [&](int64_t i) {  // clamped, so that no load leaves the storage; a clamped one is reported below
      const uint32_t line = static_cast<uint32_t>(index[i]);  // a negative number wraps past the end
      past |= line > last;
      return base[static_cast<int64_t>(std::min(line, last)) * 16];
    };
    int64_t i = begin;
    for (; i + 4 <= end; i += 4) {
      for (int u = 0; u < 4; ++u) acc[u] += load(i + u);
    }
    for (; i < end; ++i) acc[0] += load(i);
    sums[at::get_thread_num()] += acc[0] + acc[1] + acc[2] + acc[3];
    outside[at::get_thread_num()] |= past;
  });
  double total = 0.0;
  bool past = false;
  for (size_t t = 0; t < sums.size(); ++t) {
    total += sums[t];
    past = past || outside[t] != 0;
  }
  TORCH_CHECK(!past, "lines: line numbers outside [0, ", storage_lines,
              ") of the map's storage; list the lines of this map (bench/work.py: touched_lines)");
  return total;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("read_lines", &read_lines, "one load from each listed line"); }
