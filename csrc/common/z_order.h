// The order a kernel split over boxes visits them in, so that the boxes one thread takes one after another read
// neighbouring pixels: by image, then by the Z (Morton) order of their windows' centres on a grid of kZOrderTile
// pixels. Each box still writes only its own output, so the order changes no value.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>
#include <vector>

namespace impls {

// The grid's tile side, in pixels: a P2 box of a 14x14 head is about 12 pixels wide.
constexpr int64_t kZOrderTile = 8;

// The boxes [0, K) in Z order. idx[k]: box k's image; window(k): the rectangle {y0, y1, x0, x1} of pixels
// [y0, y1) x [x0, x1) it reads (rows and columns from 0).
template <typename Window>
std::vector<int64_t> z_order(int64_t K, const int64_t* idx, const Window& window) {
  auto tile = [](int64_t a, int64_t b) {  // the tile of the window's centre (a + b) / 2 on one axis, 16 bits
    return static_cast<uint64_t>(std::clamp<int64_t>((a + b) / (2 * kZOrderTile), 0, 0xFFFF));
  };
  std::vector<uint64_t> key(K);
  for (int64_t k = 0; k < K; ++k) {
    const std::array<int64_t, 4> w = window(k);
    const uint64_t y = tile(w[0], w[1]), x = tile(w[2], w[3]);
    uint64_t z = 0;
    for (int bit = 0; bit < 16; ++bit) z |= ((y >> bit) & 1) << (2 * bit + 1) | ((x >> bit) & 1) << (2 * bit);
    key[k] = static_cast<uint64_t>(idx[k]) << 32 | z;
  }
  std::vector<int64_t> order(K);
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return key[a] < key[b]; });
  return order;
}

}  // namespace impls
