// crop_and_resize's CPU kernels on channels_last (NHWC) tensors, read and written in place.
//
// Every tap of a sample is a run of contiguous channels, so the inner loops are vectorized over channels
// (TensorFlow's NHWC kernel works the same way), up to kChunk channels per pass over the boxes.
// - Forward: split over boxes, taken in Z order of their windows (common/z_order.h); image rows are interpolated
//   horizontally once per box (LerpRowCache), and each crop row's vertical lerp is written straight into out[k].
// - Image gradient (crop_image_grad_banded, also NCHW's where the taps outnumber the pixels): split over (image, band
//   of rows, channel slice); each task walks its image's boxes in increasing k, adding into a channels-last scratch
//   band in L2 (float32 with AVX-512: the accumulators under a crop row's cells in registers, add_row_columns16), so
//   every element receives its contributions in the reference's order (box, cell, corner): deterministic,
//   independent of the thread count, and no two threads write the same element.
// - Box gradient: split over boxes; each box sums channel, cell in the reference's order.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "common/cpu_common.h"
#include "common/z_order.h"
#include "crop_and_resize/crop_and_resize_tables.h"

namespace impls {

// Channels per pass over the boxes: two cached interpolated rows of a 28-wide crop then take
// 2 x 28 x 512 x 4 B = 112 KB (float32), within L2.
constexpr int64_t kChunk = 512;

// Horizontal pass of one image row for every column of a box: h[px * slice_c + c] is the reference's
// "t = TL + (TR - TL) * x_lerp" for that row, computed once and shared by every crop row that reads this image row
// (a 28x28 crop of a 16-pixel-high box reads 17 image rows for its 56 row taps).
template <typename scalar_t, typename T>
void lerp_image_row(const CropAxis<T>* xk, int64_t crop_width, const scalar_t* row, int64_t stride, int64_t slice_c,
                    T* h) {
  for (int64_t px = 0; px < crop_width; ++px) {
    const CropAxis<T>& x = xk[px];
    if (!x.valid) continue;
    const scalar_t* left = row + x.lo * stride;
    const scalar_t* right = row + x.hi * stride;
    const T xl = x.lerp;
    T* hp = h + px * slice_c;
    for (int64_t c = 0; c < slice_c; ++c) {
      const T l = static_cast<T>(left[c]), r = static_cast<T>(right[c]);
      hp[c] = l + (r - l) * xl;
    }
  }
}

// Two horizontally interpolated image rows, keyed by image row: consecutive crop rows mostly reuse one or both.
template <typename T>
struct LerpRowCache {
  std::vector<T> rows[2];
  int64_t tag[2] = {-1, -1};

  // Slot holding image row r; on a miss fill(slot data) computes it into the slot other than `keep`.
  template <typename Fill>
  int get(int64_t r, int keep, const Fill& fill) {
    for (int s = 0; s < 2; ++s) {
      if (tag[s] == r) return s;
    }
    const int s = keep == 0 ? 1 : 0;
    fill(r, rows[s].data());
    tag[s] = r;
    return s;
  }
};

// dst[c] = t[c] + (b[c] - t[c]) * w for c < n: a crop row's vertical lerp. With `stream` (dst is the call's output,
// written once and not read again by the call, in pages already in memory), whole float vectors at 32-byte-aligned
// addresses are written with non-temporal stores, a whole 64-byte line a store where dst starts on one and AVX-512 is
// there: a cached store first reads the output's line from memory, so for a 100 MB output the write costs the memory
// twice that. Without it (a crop in cache, or an output whose pages are fresh from the OS, zeroed in cache by their
// first touch: pages_are_fresh), cached stores, 16 floats wide where AVX-512 is there. The same operations give the
// same values either way; the task issues the fence. Whole-line streamed stores against 32-byte ones, the
// channels_last forward on 2 Xeon (Emerald Rapids) cores under mimalloc, alternated in one process: P2 512 x 14x14
// 3.74 -> 3.61 ms, 128 x 28x28 2.96 -> 2.90 ms, RGB 2.28 -> 2.21 ms.
template <typename scalar_t, typename T>
inline void vertical_lerp(const T* t, const T* b, T w, scalar_t* dst, int64_t n, bool stream) {
  int64_t c = 0;
#ifdef __AVX2__
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<T, float>) {
    const __m256 wv = _mm256_set1_ps(w);
    auto lerp8 = [&](int64_t i) {
      const __m256 tv = _mm256_loadu_ps(t + i), bv = _mm256_loadu_ps(b + i);
      return _mm256_add_ps(tv, _mm256_mul_ps(_mm256_sub_ps(bv, tv), wv));
    };
#ifdef __AVX512F__
    const __m512 wz = _mm512_set1_ps(w);
    auto lerp16 = [&](int64_t i) {
      const __m512 tv = _mm512_loadu_ps(t + i), bv = _mm512_loadu_ps(b + i);
      return _mm512_add_ps(tv, _mm512_mul_ps(_mm512_sub_ps(bv, tv), wz));
    };
#endif
    const auto at = reinterpret_cast<uintptr_t>(dst);
    if (stream && at % 32 == 0) {
#ifdef __AVX512F__
      if (at % 64 == 0) {
        for (; c < n / 16 * 16; c += 16) _mm512_stream_ps(dst + c, lerp16(c));
      }
#endif
      for (; c < n / 8 * 8; c += 8) _mm256_stream_ps(dst + c, lerp8(c));
    } else {
#ifdef __AVX512F__
      for (; c < n / 16 * 16; c += 16) _mm512_storeu_ps(dst + c, lerp16(c));
#endif
      for (; c < n / 8 * 8; c += 8) _mm256_storeu_ps(dst + c, lerp8(c));
    }
  }
#endif
  for (; c < n; ++c) dst[c] = static_cast<scalar_t>(t[c] + (b[c] - t[c]) * w);
}

// The taps of the image rows that crop row `next` reads and crop row `y` does not, asked of memory ahead of their
// use: the channels_last forward reads the map from memory, and a new image row's taps otherwise arrive one miss at a
// time as lerp_image_row reaches them (P2, 512 boxes of 14x14, 2 cores, jemalloc: 7.5 -> 6.5 ms, alternated in one
// process).
template <typename scalar_t, typename T>
void prefetch_next_rows(const CropAxis<T>& y, const CropAxis<T>& next, const CropAxis<T>* xk, int64_t crop_width,
                        const scalar_t* im, int64_t W, int64_t stride, int64_t slice_c) {
  if (!next.valid) return;
  for (const int64_t r : {next.lo, next.hi}) {
    if (r == y.lo || r == y.hi) continue;
    const scalar_t* row = im + r * W * stride;
    for (int64_t px = 0; px < crop_width; ++px) {
      if (!xk[px].valid) continue;
      prefetch_run(row + xk[px].lo * stride, slice_c);
      prefetch_run(row + xk[px].hi * stride, slice_c);
    }
  }
}

// Whether prefetch_next_rows pays on this CPU: it did on 2 Zen 4 cores (above), and it costs on 2 Xeon (Emerald
// Rapids) cores, whose own prefetchers already follow each tap's run of channels. There, the forward without it, the
// two alternated in one process under mimalloc: P2 128 x 28x28 4.36 -> 3.93 ms, 512 x 14x14 5.76 -> 5.04 ms, 32 P3
// maps with one 14x14 box each 0.56 -> 0.46 ms (faster in each of three runs; prefetching each pixel once instead
// of each tap's run: no better). Read once per process.
inline bool next_rows_prefetch_pays() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool amd = __builtin_cpu_is("amd");
  return amd;
#else
  return true;
#endif
}

// Where crop_forward_box reads and writes: a copy of the planes in cache into a crop in cache (the NCHW block
// paths), or the call's own map into its output (the channels_last forward), by cached stores where the output's
// pages are fresh from the OS (pages_are_fresh), else streamed (vertical_lerp).
enum class CropMemory : uint8_t { kInCache, kCachedStores, kStreamedStores };

// crop_forward_box's default `before_row`: nothing.
struct NoRowHook {
  void operator()(int64_t) const {}
};

// One crop, channels [c0, c0 + slice_c), channels last: cell (py, px) into dst + (py * crop_width + px) * step,
// slice_c contiguous values (dst = &out[k][c0][0][0], step = C). `memory`: with the call's own tensors (not a copy
// in cache), where that pays (next_rows_prefetch_pays), the next crop row's image rows are prefetched
// (prefetch_next_rows), and the output is streamed unless its pages are fresh (vertical_lerp). before_row(py)
// runs before crop row py is computed: the NCHW forward streams part py of the previous crop's planes there
// (crop_forward_blocks). kC > 0: stride, slice_c and step are all kC, known when compiled (crop_interleaved).
template <int64_t kC = 0, typename scalar_t, typename T, typename Hook = NoRowHook>
void crop_forward_box(const CropAxis<T>* yk, const CropAxis<T>* xk, int64_t crop_height, int64_t crop_width,
                      bool nearest, scalar_t ext, const scalar_t* im, int64_t W, int64_t stride, int64_t slice_c,
                      LerpRowCache<T>& cache, scalar_t* dst, int64_t step, CropMemory memory,
                      const Hook& before_row = Hook{}) {
  if constexpr (kC > 0) stride = slice_c = step = kC;
  cache.tag[0] = cache.tag[1] = -1;  // the cached rows belong to another box's columns
  auto fill = [&](int64_t r, T* h) { lerp_image_row(xk, crop_width, im + r * W * stride, stride, slice_c, h); };
  const bool prefetch_rows = memory != CropMemory::kInCache && next_rows_prefetch_pays();
  const bool stream = memory == CropMemory::kStreamedStores;
  // A crop row whose cells are contiguous in dst and all inside the map is one vertical lerp over the cached rows
  // (and one streamed run), however few channels a cell has: RGB's 3 too.
  const bool whole_rows = step == slice_c && std::all_of(xk, xk + crop_width, [](const CropAxis<T>& x) {
    return x.valid;
  });
  for (int64_t py = 0; py < crop_height; ++py) {
    before_row(py);
    const CropAxis<T>& y = yk[py];
    scalar_t* row = dst + py * crop_width * step;
    if (!y.valid) {
      for (int64_t px = 0; px < crop_width; ++px) std::fill(row + px * step, row + px * step + slice_c, ext);
    } else if (nearest) {
      const scalar_t* src = im + y.nearest * W * stride;
      for (int64_t px = 0; px < crop_width; ++px) {
        const CropAxis<T>& x = xk[px];
        scalar_t* bp = row + px * step;
        if (x.valid) {
          std::copy(src + x.nearest * stride, src + x.nearest * stride + slice_c, bp);
        } else {
          std::fill(bp, bp + slice_c, ext);
        }
      }
    } else {
      if (prefetch_rows && py + 1 < crop_height) {
        prefetch_next_rows(y, yk[py + 1], xk, crop_width, im, W, stride, slice_c);
      }
      const int st = cache.get(y.lo, -1, fill);
      const int sb = cache.get(y.hi, st, fill);
      const T* top = cache.rows[st].data();
      const T* bottom = cache.rows[sb].data();
      const T yl = y.lerp;
      if (whole_rows) {
        vertical_lerp(top, bottom, yl, row, crop_width * slice_c, stream);
        continue;
      }
      for (int64_t px = 0; px < crop_width; ++px) {
        scalar_t* bp = row + px * step;
        if (!xk[px].valid) {
          std::fill(bp, bp + slice_c, ext);
          continue;
        }
        vertical_lerp(top + px * slice_c, bottom + px * slice_c, yl, bp, slice_c, stream);
      }
    }
  }
}

// Whether crop row y's top and bottom taps fall in the band of image rows [r0, r1) (nearest: its one tap, as top).
template <typename T>
std::array<bool, 2> taps_in_band(const CropAxis<T>& y, bool nearest, int64_t r0, int64_t r1) {
  auto in_band = [&](int64_t r) { return r >= r0 && r < r1; };
  if (!y.valid) return {false, false};
  return {in_band(nearest ? y.nearest : y.lo), !nearest && in_band(y.hi)};
}

// Channels a pass of add_row_columns16 keeps in registers: 4 vectors of 16, two columns of two rows, 16 accumulators.
constexpr int64_t kRegisterPassChannels = 64;

// Whether add_crop_row_grad adds a crop row's taps with their accumulators in registers (add_row_corners16):
// AVX-512, float gradient values (G: the gradient's own type where it is read in place, T where it was transposed)
// and accumulators, bilinear, at least 16 channels.
template <typename G, typename T>
constexpr bool taps_in_registers(bool nearest, int64_t slice_c) {
#ifdef __AVX512F__
  return std::is_same_v<G, float> && std::is_same_v<T, float> && !nearest && slice_c >= 16;
#else
  (void)nearest;
  (void)slice_c;
  return false;
#endif
}

#ifdef __AVX512F__
// The bilinear corners of crop_image_grad_row for float, channels [c, c + 16 * V) of the accumulator (the last vector's
// lanes masked to `tail`): the crop row's cells walk its image columns left to right, each cell's taps at columns lo
// and hi = lo or lo + 1 (floor and ceil, crop_tap), and a 28x28 crop of a 10-pixel-wide box puts about 6 taps on each
// column. The accumulators of the two columns a, a + 1 under the cells (of the band's top and bottom rows) stay in
// registers while the cells add into them, and are stored when the cells move past them: each accumulator is loaded and
// stored once a run of cells instead of once a tap. Every add is the reference's expression, (1 - xl) * ((1 - yl) * g)
// and so on, unfused, into the same accumulator in the same order (cell, then tl, tr, bl, br), so the result is that of
// a load, add and store per tap; a cell whose lo is not a or a + 1 (a flipped box walks right to left) stores both
// columns and starts a new pair. TOP, BOTTOM: which rows of the cell are in the band; ONE_ROW: both, and they are one
// image row (an integer y: y.lo == y.hi), whose accumulators take all four corners in order.
template <bool TOP, bool BOTTOM, bool ONE_ROW, int V>
void add_row_columns16(const CropAxis<float>& y, const CropAxis<float>* xk, int64_t crop_width, const float* gt,
                       int64_t gt_step, int64_t slice_c, int64_t W, int64_t r0, int64_t c, __mmask16 tail,
                       float* acc) {
  const __m512 ay = _mm512_set1_ps(1 - y.lerp), by = _mm512_set1_ps(y.lerp);
  float* rows[2] = {TOP ? acc + ((y.lo - r0) * W * slice_c + c) : nullptr,
                    BOTTOM ? acc + ((y.hi - r0) * W * slice_c + c) : nullptr};
  auto mask = [&](int v) { return v == V - 1 ? tail : __mmask16(0xFFFF); };
  constexpr bool kAdds[2] = {TOP, BOTTOM};             // the rows the cell's corners add into
  constexpr bool kHeld[2] = {TOP, BOTTOM && !ONE_ROW};  // the rows whose accumulators are in registers
  constexpr int kInto[2] = {0, ONE_ROW ? 0 : 1};      // the registers each row's corners add into
  __m512 col_a[2][V], col_b[2][V];  // [top, bottom][vector]: the accumulators of columns a and a + 1
  int64_t a = -2;
  bool held_a = false, held_b = false;
  auto load = [&](int64_t col, __m512 (&reg)[2][V]) {
    for (int r = 0; r < 2; ++r) {
      if (!kHeld[r]) continue;
      for (int v = 0; v < V; ++v) reg[r][v] = _mm512_maskz_loadu_ps(mask(v), rows[r] + col * slice_c + v * 16);
    }
  };
  auto store = [&](int64_t col, __m512 (&reg)[2][V]) {
    for (int r = 0; r < 2; ++r) {
      if (!kHeld[r]) continue;
      for (int v = 0; v < V; ++v) _mm512_mask_storeu_ps(rows[r] + col * slice_c + v * 16, mask(v), reg[r][v]);
    }
  };
  for (int64_t px = 0; px < crop_width; ++px) {
    const CropAxis<float>& x = xk[px];
    if (!x.valid) continue;
    if (x.lo == a + 1) {
      if (held_a) store(a, col_a);
      for (int r = 0; r < 2; ++r) {
        for (int v = 0; v < V; ++v) col_a[r][v] = col_b[r][v];
      }
      held_a = held_b;
      held_b = false;
      a = x.lo;
    } else if (x.lo != a) {
      if (held_a) store(a, col_a);
      if (held_b) store(a + 1, col_b);
      held_a = held_b = false;
      a = x.lo;
    }
    if (!held_a) load(a, col_a);
    held_a = true;
    const bool right_is_b = x.hi != a;
    if (right_is_b && !held_b) load(a + 1, col_b);
    held_b = held_b || right_is_b;
    const __m512 ax = _mm512_set1_ps(1 - x.lerp), bx = _mm512_set1_ps(x.lerp);
    const float* gv = gt + px * gt_step + c;
    auto add_cell = [&](__m512 (&right)[2][V]) {
      for (int v = 0; v < V; ++v) {
        const __m512 g = _mm512_maskz_loadu_ps(mask(v), gv + v * 16);
        for (int r = 0; r < 2; ++r) {
          if (!kAdds[r]) continue;
          const __m512 gy = _mm512_mul_ps(r == 0 ? ay : by, g);
          col_a[kInto[r]][v] = _mm512_add_ps(col_a[kInto[r]][v], _mm512_mul_ps(ax, gy));
          right[kInto[r]][v] = _mm512_add_ps(right[kInto[r]][v], _mm512_mul_ps(bx, gy));
        }
      }
    };
    if (right_is_b) {
      add_cell(col_b);
    } else {
      add_cell(col_a);
    }
  }
  if (held_a) store(a, col_a);
  if (held_b) store(a + 1, col_b);
}

// add_row_columns16 over all slice_c channels: kRegisterPassChannels a pass, then 16 at a time. Called once a crop
// row, never inlined: inlined, it slowed the 3-channel RGB gradient of channels_last images, which never takes it, by
// 7% (6.66 -> 7.14 ms, alternated in one process; code placement).
template <bool TOP, bool BOTTOM, bool ONE_ROW>
__attribute__((noinline)) void add_row_corners16(const CropAxis<float>& y, const CropAxis<float>* xk,
                                                 int64_t crop_width, const float* gt, int64_t gt_step, int64_t slice_c,
                                                 int64_t W, int64_t r0, float* acc) {
  constexpr int kVectors = kRegisterPassChannels / 16;
  int64_t c = 0;
  for (; c + kRegisterPassChannels <= slice_c; c += kRegisterPassChannels) {
    add_row_columns16<TOP, BOTTOM, ONE_ROW, kVectors>(y, xk, crop_width, gt, gt_step, slice_c, W, r0, c, 0xFFFF, acc);
  }
  for (; c < slice_c; c += 16) {
    const __mmask16 tail =
        slice_c - c >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (slice_c - c)) - 1);
    add_row_columns16<TOP, BOTTOM, ONE_ROW, 1>(y, xk, crop_width, gt, gt_step, slice_c, W, r0, c, tail, acc);
  }
}
#endif

// Image gradient of crop row y of one box into the image rows [r0, r1) of a channels-last accumulator, from its
// gradient gt [crop_width, slice_c], in the reference's order (cell, then corner); contributions to other rows are
// left out (they belong to another band's task). Cell px's slice_c gradient values are at gt + px * gt_step (G: the
// gradient's own type, or T after a transposition); pixel (r, x)'s accumulators at acc + ((r - r0) * W + x) *
// slice_c. Each corner is its own loop over the channels: two corners on the same pixel (an integer coordinate) then
// add in the reference's order, and the vectorizer has no aliasing to rule out.
template <typename G, typename T>
void crop_image_grad_row(const CropAxis<T>& y, const CropAxis<T>* xk, int64_t crop_width, bool nearest, const G* gt,
                         int64_t gt_step, int64_t slice_c, int64_t W, int64_t r0, int64_t r1, T* acc) {
  const auto [top, bottom] = taps_in_band(y, nearest, r0, r1);
  if (!top && !bottom) return;
  for (int64_t px = 0; px < crop_width; ++px) {
    const CropAxis<T>& x = xk[px];
    if (!x.valid) continue;
    const G* gv = gt + px * gt_step;
    if (nearest) {
      T* a = acc + ((y.nearest - r0) * W + x.nearest) * slice_c;
      for (int64_t c = 0; c < slice_c; ++c) a[c] += static_cast<T>(gv[c]);
      continue;
    }
    const T yl = y.lerp, xl = x.lerp;
    if (top) {
      T* tl = acc + ((y.lo - r0) * W + x.lo) * slice_c;
      T* tr = acc + ((y.lo - r0) * W + x.hi) * slice_c;
      for (int64_t c = 0; c < slice_c; ++c) tl[c] += (1 - xl) * ((1 - yl) * static_cast<T>(gv[c]));
      for (int64_t c = 0; c < slice_c; ++c) tr[c] += xl * ((1 - yl) * static_cast<T>(gv[c]));
    }
    if (bottom) {
      T* bl = acc + ((y.hi - r0) * W + x.lo) * slice_c;
      T* br = acc + ((y.hi - r0) * W + x.hi) * slice_c;
      for (int64_t c = 0; c < slice_c; ++c) bl[c] += (1 - xl) * (yl * static_cast<T>(gv[c]));
      for (int64_t c = 0; c < slice_c; ++c) br[c] += xl * (yl * static_cast<T>(gv[c]));
    }
  }
}

// Crop row y's image gradient into the band's accumulator: add_row_corners16 where its taps add in registers
// (taps_in_registers), crop_image_grad_row otherwise; the same sums either way.
template <typename G, typename T>
void add_crop_row_grad(const CropAxis<T>& y, const CropAxis<T>* xk, int64_t crop_width, bool nearest, const G* gt,
                       int64_t gt_step, int64_t slice_c, int64_t W, int64_t r0, int64_t r1, T* acc) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<G, float> && std::is_same_v<T, float>) {
    if (taps_in_registers<G, T>(nearest, slice_c)) {
      const auto [top, bottom] = taps_in_band(y, nearest, r0, r1);
      if (top && bottom && y.lo == y.hi) {
        add_row_corners16<true, true, true>(y, xk, crop_width, gt, gt_step, slice_c, W, r0, acc);
      } else if (top && bottom) {
        add_row_corners16<true, true, false>(y, xk, crop_width, gt, gt_step, slice_c, W, r0, acc);
      } else if (top) {
        add_row_corners16<true, false, false>(y, xk, crop_width, gt, gt_step, slice_c, W, r0, acc);
      } else if (bottom) {
        add_row_corners16<false, true, false>(y, xk, crop_width, gt, gt_step, slice_c, W, r0, acc);
      }
      return;
    }
  }
#endif
  crop_image_grad_row(y, xk, crop_width, nearest, gt, gt_step, slice_c, W, r0, r1, acc);
}

// The box gradient's sums of box k over channels [c0, c0 + slice_c), continuing sums (d y1, d x1, d y2, d x2); its
// incoming gradient gk = &grad[k][c0][0][0] with strides gs_c, gs_y, gs_x.
// The image factors of gy and gx are computed for every cell, slice_c channels at a time (contiguous taps), into
// fy, fx [cells, slice_c]; then g times them is summed channel, cell, in the reference's order.
template <typename scalar_t, typename T>
void crop_box_grad_box(const CropAxis<T>* yk, const CropAxis<T>* xk, int64_t crop_height, int64_t crop_width,
                       const scalar_t* im, int64_t W, int64_t stride, int64_t slice_c, const scalar_t* gk, int64_t gs_c,
                       int64_t gs_y, int64_t gs_x, T* fy, T* fx, std::array<T, 4>& sums) {
  for (int64_t py = 0; py < crop_height; ++py) {
    const CropAxis<T>& y = yk[py];
    if (!y.valid) continue;
    const scalar_t* top = im + y.lo * W * stride;
    const scalar_t* bottom = im + y.hi * W * stride;
    const T yl = y.lerp;
    for (int64_t px = 0; px < crop_width; ++px) {
      const CropAxis<T>& x = xk[px];
      if (!x.valid) continue;
      const scalar_t* tlp = top + x.lo * stride;
      const scalar_t* trp = top + x.hi * stride;
      const scalar_t* blp = bottom + x.lo * stride;
      const scalar_t* brp = bottom + x.hi * stride;
      const T xl = x.lerp;
      T* fyp = fy + (py * crop_width + px) * slice_c;
      T* fxp = fx + (py * crop_width + px) * slice_c;
      for (int64_t c = 0; c < slice_c; ++c) {
        const T tl = static_cast<T>(tlp[c]), tr = static_cast<T>(trp[c]);
        const T bl = static_cast<T>(blp[c]), br = static_cast<T>(brp[c]);
        const TapSlopes<T> slope = tap_slopes(tl, tr, bl, br, xl, yl);
        fyp[c] = slope.dy;
        fxp[c] = slope.dx;
      }
    }
  }
  T d_y1 = sums[0], d_x1 = sums[1], d_y2 = sums[2], d_x2 = sums[3];
  for (int64_t c = 0; c < slice_c; ++c) {
    const scalar_t* gc = gk + c * gs_c;
    for (int64_t py = 0; py < crop_height; ++py) {
      const CropAxis<T>& y = yk[py];
      if (!y.valid) continue;
      for (int64_t px = 0; px < crop_width; ++px) {
        const CropAxis<T>& x = xk[px];
        if (!x.valid) continue;
        const int64_t cell = py * crop_width + px;
        const T gv = static_cast<T>(gc[py * gs_y + px * gs_x]);
        const T gy = gv * fy[cell * slice_c + c];
        const T gx = gv * fx[cell * slice_c + c];
        d_y1 += gy * y.d_lo;
        d_x1 += gx * x.d_lo;
        d_y2 += gy * y.d_hi;
        d_x2 += gx * x.d_hi;
      }
    }
  }
  sums = {d_y1, d_x1, d_y2, d_x2};
}

// One call's image gradient, what every task reads: the sample tables, the incoming gradient (read through its
// strides), the boxes of each image in increasing k (order[start[n] .. start[n + 1])), and each box's image rows.
template <typename scalar_t, typename T>
struct ImageGradCall {
  const CropTables<scalar_t, T>& tab;
  const scalar_t* g;
  int64_t gs_k, gs_c, gs_y, gs_x;
  int64_t crop_height, crop_width, C, W, plane_size;
  bool nearest;
  bool grad_in_place;  // a dense channels_last gradient: each cell's channels are one contiguous run
  const std::vector<int64_t>& order;
  const std::vector<int64_t>& start;
  // Box k's gradient reaches image rows [rows[k][0], rows[k][1]): axis_span of its row table.
  const std::vector<std::array<int64_t, 2>>& rows;
};

// Crop row py of box k's incoming gradient, channels [c0, c0 + slice_c) at gk, transposed into gt [crop_width,
// slice_c]. A row of each channel is one contiguous run in an NCHW gradient: whole 8x8 tiles then go through AVX2
// (transpose_matrix); other strides (an expanded gradient's 0s) are read value by value.
template <typename scalar_t, typename T>
void transpose_grad_row(const ImageGradCall<scalar_t, T>& call, const scalar_t* gk, int64_t py, int64_t slice_c,
                        T* gt) {
  const scalar_t* row = gk + py * call.gs_y;
  if (call.gs_x == 1 && call.gs_c != 0) {
    transpose_matrix(row, slice_c, call.crop_width, gt, call.gs_c);
    return;
  }
  for (int64_t c = 0; c < slice_c; ++c) {
    for (int64_t px = 0; px < call.crop_width; ++px) {
      gt[px * slice_c + c] = static_cast<T>(row[c * call.gs_c + px * call.gs_x]);
    }
  }
}

// Crop row py of box k's incoming gradient, channels [c0, c0 + slice_c) at gk, asked of memory ahead of its use: the
// gradient is read once from memory (P2, 512 boxes of 14x14: 103 MB), and without it every crop row's first corner
// waits on its loads (the channels_last image gradient, P2 512 x 14x14: 17 -> 12 ms on 2 cores). An expanded
// gradient (0 strides) is small and not prefetched.
template <typename scalar_t, typename T>
void prefetch_grad_row(const ImageGradCall<scalar_t, T>& call, const scalar_t* gk, int64_t py, int64_t slice_c) {
  const scalar_t* row = gk + py * call.gs_y;
  if (call.grad_in_place) {  // cell px's slice_c channels are one contiguous run
    for (int64_t px = 0; px < call.crop_width; ++px) prefetch_run(row + px * call.C, slice_c);
  } else if (call.gs_x == 1 && call.gs_c != 0) {  // each channel's row is one contiguous run (NCHW)
    for (int64_t c = 0; c < slice_c; ++c) prefetch_run(row + c * call.gs_c, call.crop_width);
  }
}

// The image gradient of image n, rows [r0, r1), channels [c0, c0 + slice_c): the boxes that reach those rows in
// increasing k, each crop row in increasing py, added into acc (pixel (r, x)'s channels at acc + ((r - r0) * W + x)
// * slice_c). gt: room for one crop row's transposed gradient, unless the gradient is read in place; only the
// crop rows that reach the band are transposed (each at most twice in a call: its top and its bottom image row).
template <typename scalar_t, typename T>
void accumulate_image(const ImageGradCall<scalar_t, T>& call, int64_t n, int64_t r0, int64_t r1, int64_t c0,
                      int64_t slice_c, T* gt, T* acc) {
  auto reaches_band = [&](const CropAxis<T>& y) {
    const auto [top, bottom] = taps_in_band(y, call.nearest, r0, r1);
    return top || bottom;
  };
  for (int64_t j = call.start[n]; j < call.start[n + 1]; ++j) {
    const int64_t k = call.order[j];
    if (call.rows[k][0] >= r1 || call.rows[k][1] <= r0) continue;
    const CropAxis<T>* yk = call.tab.ys.data() + k * call.crop_height;
    const CropAxis<T>* xk = call.tab.xs.data() + k * call.crop_width;
    const scalar_t* gk = call.g + k * call.gs_k + c0 * call.gs_c;
    for (int64_t py = 0; py < call.crop_height; ++py) {
      if (!reaches_band(yk[py])) continue;
      if (py + 1 < call.crop_height) prefetch_grad_row(call, gk, py + 1, slice_c);
      if (call.grad_in_place) {
        add_crop_row_grad(yk[py], xk, call.crop_width, call.nearest, gk + py * call.gs_y, call.C, slice_c, call.W,
                          r0, r1, acc);
        continue;
      }
      transpose_grad_row(call, gk, py, slice_c, gt);
      add_crop_row_grad(yk[py], xk, call.crop_width, call.nearest, gt, slice_c, slice_c, call.W, r0, r1, acc);
    }
  }
}

#ifdef __AVX512F__
// Part `part` of `parts` of a float accumulator [plane_size, 16] written as 16 planes of plane_size values at out0
// (plane j at out0 + j * plane_size, out0 64-byte aligned, so the 16 planes are whole cache lines), 16 pixels at a
// time transposed in registers (transpose16x16). Where plane_size is a multiple of 16, each plane's 16 values are one
// whole aligned line, streamed from the register, with no copy in cache. Else (a 14x14 crop: 196 values, each plane
// starting a quarter line after the last) part 0 stores the tiles' planes into `planes` in cache, 16 values per store
// (the last tile's masked to its pixels), and each part streams its share of the run a whole line per store: on 2
// Xeon (Emerald Rapids) cores under mimalloc, against transpose_matrix's 8x8 AVX2 tiles and half-line streamed stores,
// alternated in one process, 7 rounds, P2 forward 512 x 14x14 8.44 -> 7.95 ms; cached stores of the same lines took
// 12.3 ms.
inline void stream_planes16_part(const float* acc, int64_t plane_size, float* planes, float* out0, int64_t part,
                                 int64_t parts) {
  const int64_t tiles = (plane_size + 15) / 16;
  if (plane_size % 16 == 0) {
    stream_tiles16(acc, plane_size, 16, plane_size, out0, part * tiles / parts, (part + 1) * tiles / parts,
                   /*cached=*/false, [](int64_t) { return 0xFFFFu; });
    return;
  }
  if (part == 0) {
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t pixels = std::min<int64_t>(16, plane_size - tile * 16);
      const auto in_tile = static_cast<__mmask16>((1u << pixels) - 1);
      __m512 t[16];  // t[j]: plane j's values of the tile's pixels, zero past plane_size
      load_tile16(acc + tile * 16 * 16, 16, in_tile, t);
      for (int j = 0; j < 16; ++j) _mm512_mask_storeu_ps(planes + j * plane_size + tile * 16, in_tile, t[j]);
    }
  }
  for (int64_t line = part * plane_size / parts; line < (part + 1) * plane_size / parts; ++line) {
    _mm512_stream_ps(out0 + line * 16, _mm512_loadu_ps(planes + line * 16));
  }
}
#endif

// Part `part` of `parts` of store_planes for planes that are one contiguous run (plane_stride = plane_size): part 0
// transposes the accumulator whole into `planes` in cache, then each part streams its share of the run, split at
// cache lines of out0 (stream_copy), so the run goes out in order, line after line. The NCHW forward streams a
// crop's planes this way between the next crop's rows (crop_forward_blocks); there the in-cache transpose beat 8x8
// AVX2 tiles streamed from registers, half a line per store (P2 forward 128 x 28x28 on 2 Xeon cores: 11.3-12.4 ->
// 9.9-10.3 ms), but 16 float planes whose lines each hold 16 of their values whole go out from 16x16 AVX-512 tiles
// (stream_planes16_part), a whole line per store, with no copy in cache: on 2 Xeon (Emerald Rapids) cores under
// mimalloc, the two alternated in one process, 7 rounds, P2 forward 128 x 28x28 7.47 -> 6.42 ms; the same tiles
// serve any plane_size (512 x 14x14: 8.44 -> 7.95 ms, above).
template <typename scalar_t, typename T>
void store_planes_part(const T* acc, int64_t plane_size, int64_t slice_c, scalar_t* planes, scalar_t* out0,
                       int64_t part, int64_t parts) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float> && std::is_same_v<scalar_t, float>) {
    if (slice_c == 16 && reinterpret_cast<uintptr_t>(out0) % 64 == 0) {
      stream_planes16_part(acc, plane_size, planes, out0, part, parts);
      return;
    }
  }
#endif
  if (part == 0) transpose_matrix(acc, plane_size, slice_c, planes);
  const int64_t n = slice_c * plane_size;
  auto line_start = [&](int64_t i) -> int64_t {  // the start of the line of out0 + i (0 and n themselves)
    if (i == 0 || i == n) return i;
    return i - static_cast<int64_t>(reinterpret_cast<uintptr_t>(out0 + i) % 64 / sizeof(scalar_t));
  };
  const int64_t begin = std::max<int64_t>(0, line_start(part * n / parts));
  const int64_t end = std::max<int64_t>(0, line_start((part + 1) * n / parts));
  stream_copy(planes + begin, out0 + begin, end - begin);
}

// Channels per task of the image gradient: at most max_chunk, narrower when there would be fewer tasks than threads
// (C = 64 on one image would otherwise be one task), at least kChannelBlock. An element's order of contributions
// does not depend on it.
inline int64_t image_grad_chunk(int64_t N, int64_t C, int64_t max_chunk) {
  const int64_t tasks_per_image = (at::get_num_threads() + N - 1) / N;
  const int64_t per_task = (C + tasks_per_image - 1) / tasks_per_image;
  return std::clamp<int64_t>((per_task + kChannelBlock - 1) / kChannelBlock * kChannelBlock, kChannelBlock,
                             max_chunk);
}

// Bytes of one image-gradient task's accumulator band: it stays in L2 (1-2 MB per core on current x86) while the
// task's boxes add into it, where a whole map's channel slice (P2: 200 x 304 x 128 x 4 B = 31 MB) would not even fit
// in L3 and every corner's add would miss.
constexpr int64_t kCropGradBandBytes = int64_t{1} << 20;

// Image gradient into gi [N, C, H, W], channels_last or NCHW (`planes`), split over (image, band of rows, channel
// slice): each task zeroes and accumulates its rows and channels of its image, walking the boxes that reach its rows
// in increasing k (so every element still receives its contributions in the reference's order), channels last, into
// a scratch [band, W, slice] in T that stays in L2, then streamed into gi (store_channels_last: rounded once for
// half types) or transposed into its planes (store_read_planes; NCHW: each tap's slice values are one contiguous run
// of the scratch, where NCHW planes would take one scattered read-modify-write per channel). In NCHW only the pixels
// the boxes read (ReadRuns) are zeroed in the scratch and transposed: on 2 Xeon (Emerald Rapids) cores, AVX-512, the
// two alternated in one process under mimalloc, P2 forward + image gradient 128 x 28x28 17.2 -> 15.5 ms, 512 x 14x14
// 19.6 -> 19.1 ms. `fresh_gi`: gi's pages are fresh from the OS (pages_are_fresh), and its NCHW planes are written by
// cached stores: on the same cores, 7971157 and this choice alternated in one process, 4 rounds, each gradient alive
// until the next call returns, under glibc (which maps each P2 gradient anew) the NCHW image gradient of P2 512 x
// 14x14 took 15.7 -> 13.1 ms, 128 x 28x28 14.5 -> 12.0 ms. Its channels_last runs stay streamed: cached, the 14x14
// one took 12.1 -> 13.6 ms.
template <typename scalar_t, typename T>
void crop_image_grad_banded(const ImageGradCall<scalar_t, T>& call, int64_t N, int64_t K, bool planes,
                            bool fresh_gi, scalar_t* gi) {
  const int64_t C = call.C, W = call.W, cells = call.crop_height * call.crop_width, plane_size = call.plane_size;
  const int64_t H = plane_size / W;  // W > 0: an empty map returns before any kernel
  // Where the taps add in registers, a task's slice is one register pass (kRegisterPassChannels), its band twice as
  // tall as 128 channels would leave it. On 2 Xeon (Emerald Rapids) cores under mimalloc, 50d6129 (128 channels a
  // task, each tap added into memory) and this alternated in one process, 4 rounds, gradients bit-equal: NCHW P2 512
  // x 14x14 8.58 -> 7.98 ms, 128 x 28x28 7.48 -> 6.45 ms; channels_last 6.97 -> 6.75, 6.61 -> 6.27 ms; the P3 batch
  // and RGB within 1%. Either change alone gained nothing in NCHW (28x28: 7.44 -> 7.36 ms with 64 channels a task,
  // 7.33 -> 7.26 ms with the registers).
  const bool in_registers = call.grad_in_place ? taps_in_registers<scalar_t, T>(call.nearest, C)
                                               : taps_in_registers<T, T>(call.nearest, C);
  const int64_t chunk = image_grad_chunk(N, C, in_registers ? kRegisterPassChannels : kChunk);
  const int64_t chunks = (C + chunk - 1) / chunk;
  const int64_t band = std::clamp<int64_t>(kCropGradBandBytes / (W * std::min(chunk, C) * int64_t{sizeof(T)}), 1, H);
  const int64_t bands = (H + band - 1) / band;
  const int64_t work = K / std::max<int64_t>(N, 1) * cells * chunk / bands;
  // NCHW: the pixels the boxes read, the only ones whose accumulators are zeroed, added into and transposed.
  const std::optional<ReadRuns> read =
      planes ? std::optional<ReadRuns>(crop_read_runs(call.tab, call.order, call.start, N, H, W, call.crop_height,
                                                      call.crop_width, call.nearest))
             : std::nullopt;
  at::parallel_for(0, N * bands * chunks, grain_for(work), [&](int64_t begin, int64_t end) {
    // Each item zeroes what it reads of the scratch: all of it (channels_last) or the runs (NCHW).
    const auto scratch = uninitialized_buffer<T>(band * W * std::min(chunk, C));
    std::vector<T> gt(call.grad_in_place ? 0 : call.crop_width * std::min(chunk, C));
    const auto transposed = uninitialized_buffer<scalar_t>(planes ? band * W * std::min(chunk, C) : 0);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / (bands * chunks), r0 = item / chunks % bands * band, c0 = item % chunks * chunk;
      const int64_t r1 = std::min(H, r0 + band), slice_c = std::min(chunk, C - c0), pixels = (r1 - r0) * W;
      scalar_t* out0 = planes ? gi + (n * C + c0) * plane_size + r0 * W : gi + (n * plane_size + r0 * W) * C + c0;
      if (!planes) {
        std::fill(scratch.get(), scratch.get() + pixels * slice_c, T(0));
        accumulate_image(call, n, r0, r1, c0, slice_c, gt.data(), scratch.get());
        store_channels_last(scratch.get(), pixels, slice_c, C, out0);
        continue;
      }
      const auto [first, last] = read->of_rows(n, r0, r1);
      read->zero(first, last, r0, W, slice_c, scratch.get());
      accumulate_image(call, n, r0, r1, c0, slice_c, gt.data(), scratch.get());
      store_read_planes(scratch.get(), *read, first, last, r0, W, pixels, slice_c, plane_size, transposed.get(),
                        out0, /*cached=*/fresh_gi);
    }
#ifdef __AVX2__
    _mm_sfence();  // store_read_planes' and store_channels_last's streamed stores are visible before the task ends
#endif
  });
}

// Forward into a channels_last out [K, C, crop_height, crop_width], split over boxes, kChunk channels per pass;
// `fresh_out`: out's pages are fresh from the OS (pages_are_fresh), so it is written by cached stores. On 2 Xeon
// (Emerald Rapids) cores, streamed stores only and this choice alternated in one process, 5 rounds, each call's
// output alive until the next one returns (as pytest-benchmark and a network hold it), outputs bit-equal: under
// glibc, which maps each P2 output anew, P2 512 x 14x14 12.5 -> 10.4 ms, 128 x 28x28 12.3 -> 8.8 ms. Under mimalloc,
// which hands the same pages back, cached stores for every output lost instead (4.23 -> 4.47, 3.01 -> 3.19 ms).
// The boxes go in Z order (z_order): a thread's consecutive boxes then find each other's taps in its L2, where in
// index order they read the map from L3. Measured as above under mimalloc: P2 512 x 14x14 3.61 -> 3.33 ms, RGB 2.20
// -> 2.09 ms; 128 x 28x28 and one box per P3 map unchanged (2.92 / 0.34 ms).
template <typename scalar_t, typename T>
void crop_forward_channels_last(const CropTables<scalar_t, T>& tab, const int64_t* idx, const scalar_t* image,
                                int64_t K, int64_t C, int64_t H, int64_t W, int64_t crop_height, int64_t crop_width,
                                bool nearest, scalar_t ext, bool fresh_out, scalar_t* out) {
  const int64_t cells = crop_height * crop_width;
  const CropMemory memory = fresh_out ? CropMemory::kCachedStores : CropMemory::kStreamedStores;
  const std::vector<int64_t> order =
      z_order(K, idx, [&](int64_t k) { return crop_window(tab, k, crop_height, crop_width, nearest); });
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    const int64_t slice_c = std::min(kChunk, C - c0);
    at::parallel_for(0, K, grain_for(cells * slice_c), [&](int64_t begin, int64_t end) {
      LerpRowCache<T> cache;
      for (auto& r : cache.rows) r.resize(crop_width * slice_c);
      for (int64_t j = begin; j < end; ++j) {
        const int64_t k = order[j];
        crop_forward_box(tab.ys.data() + k * crop_height, tab.xs.data() + k * crop_width, crop_height, crop_width,
                         nearest, ext, image + idx[k] * H * W * C + c0, W, C, slice_c, cache,
                         out + k * cells * C + c0, C, memory);
      }
#ifdef __AVX2__
      _mm_sfence();  // the streamed stores are visible before the task ends
#endif
    });
  }
}

// Channels per pass of the box gradient: its image factors fy, fx of a 28x28 crop then take
// 2 x 784 x 64 x 4 B = 400 KB (float32) per thread.
constexpr int64_t kBoxGradChunk = 64;

// Box gradient from a channels_last image, split over boxes; channel slices in increasing order keep each box's
// sum in the reference's order.
template <typename scalar_t, typename T>
void crop_box_grad_channels_last(const CropTables<scalar_t, T>& tab, const int64_t* idx, const scalar_t* image,
                                 const scalar_t* g, const std::array<int64_t, 4>& gs, int64_t K, int64_t C,
                                 int64_t H, int64_t W, int64_t crop_height, int64_t crop_width,
                                 std::vector<std::array<T, 4>>& sums) {
  const int64_t cells = crop_height * crop_width;
  for (int64_t c0 = 0; c0 < C; c0 += kBoxGradChunk) {
    const int64_t slice_c = std::min(kBoxGradChunk, C - c0);
    at::parallel_for(0, K, grain_for(cells * slice_c), [&](int64_t begin, int64_t end) {
      std::vector<T> fy(cells * slice_c), fx(cells * slice_c);
      for (int64_t k = begin; k < end; ++k) {
        crop_box_grad_box(tab.ys.data() + k * crop_height, tab.xs.data() + k * crop_width, crop_height, crop_width,
                          image + idx[k] * H * W * C + c0, W, C, slice_c, g + k * gs[0] + c0 * gs[1], gs[1], gs[2],
                          gs[3], fy.data(), fx.data(), sums[k]);
      }
    });
  }
}

}  // namespace impls
