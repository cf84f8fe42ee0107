// crop_and_resize's CPU kernels on NCHW tensors: no whole map is ever copied.
//
// What a call reads grows with its boxes' taps, never with N x H x W beyond them: 32 P3 maps with one 14x14 box
// each read 32 x 256 small windows, not 32 x 256 whole 100x152 planes (an earlier version transposed every map
// into a fresh channels-last buffer on every call: 162 ms where TensorFlow's NHWC kernel takes 2).
// - Forward, narrow (AVX-512, float32 bilinear, crops up to 32 columns wide, boxes mostly at most 32 columns wide:
//   P2 and P3 heads): each plane read in place, its rows in registers (crop_and_resize_narrow_boxes.h); where the
//   boxes tap every pixel several times over (P2), a task asks for its next planes' lines meanwhile, in address
//   order. The paths below take every other call.
// - Forward, sparse (C < 8: RGB patches): per (image, channel) plane, read in place; per box, the horizontal lerps
//   of an image row are computed once and shared by the crop rows that read it, the vertical lerp is a contiguous
//   loop over the crop row written straight into out[k][c], and the next plane's touched cache lines are
//   prefetched while the current one computes.
// - Forward, windows (fewer taps than pixels, C >= 8: one box per P3 map): per (box, block of 16 planes), the
//   box's window of the block is copied interleaved, row segment by row segment, into a per-thread buffer (the
//   segments of the task two ahead prefetched meanwhile), cropped by the channels_last kernel, and streamed back as
//   16 planes (32 P3 maps, 2 cores: 1.8x faster than the sparse path, then 3.7 -> 2.0 ms with the prefetch).
// - Forward, dense (more taps than pixels: P2 heads): per (image, block of 16 planes), the pixels of the block that
//   the boxes read are copied interleaved into a per-thread buffer that stays in cache (read once where the boxes
//   would read them several times; a box's rows just before its crop, the boxes in order of their first row),
//   cropped by the channels_last kernel, and each crop transposed back into 16 planes (16x16 tiles in registers,
//   through cache where a plane's values do not fill whole lines) and streamed into out[k] a part at a time, between
//   the rows of the next crop (non-temporal stores, store_planes_part).
// - Image gradient, dense (more taps than pixels, C >= 8: P2 heads): crop_image_grad_banded
//   (crop_and_resize_channels_last.h) with planes = true. Per (image, band of rows, channel slice), the taps add
//   channels-last into a scratch band that stays in L2 (each tap's channels one contiguous run, where planes take
//   one scattered read-modify-write per channel), which is then transposed into the band's rows of each plane and
//   streamed out; only the pixels the boxes read are zeroed and transposed there, the others' planes zeroed in cache
//   (ReadRuns, common/read_runs.h). P2, 512 boxes of 14x14: 37 -> 25 ms on 2 cores.
// - Image gradient, sparse (fewer taps, or C < 8: one box per P3 map, RGB): per (image, block of kChannelBlock
//   planes), the image's boxes in increasing k add their taps into the gradient's own planes (float/double) or a
//   float scratch of the block's planes (half types, rounded once). The block's kChannelBlock planes give
//   kChannelBlock independent read-modify-writes per tap, so two taps on one pixel in a row do not wait on each
//   other's store; no band is transposed where few pixels receive anything.
// Both walk each image's boxes in increasing k: every element receives its contributions in the reference's order
// (box, cell, corner), with no race and whatever the thread count.
// - Box gradient: per range of boxes, channel-outer, box-inner (each plane read while in cache); each box sums
//   its channels in increasing order, each its cells, in the reference's order.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/bilinear.h"
#include "common/cpu_common.h"
#include "crop_and_resize/crop_and_resize_channels_last.h"
#include "crop_and_resize/crop_and_resize_narrow_boxes.h"
#include "crop_and_resize/crop_and_resize_tables.h"

namespace impls {

// Every box's crop columns as arrays, for the loops over a crop row: column px of box k at [k * crop_width + px].
// Out-of-range columns read pixel 0 (a safe index) and are overwritten with extrapolation_value afterwards.
template <typename T>
struct PlaneColumns {
  std::vector<int64_t> lo, hi, nearest;
  std::vector<T> lerp;
  // Box k's out-of-range columns: invalid[invalid_start[k] .. invalid_start[k + 1]), e.g. none for a box inside
  // the image.
  std::vector<int64_t> invalid, invalid_start;

  PlaneColumns(const std::vector<CropAxis<T>>& xs, int64_t K, int64_t crop_width)
      : lo(xs.size()), hi(xs.size()), nearest(xs.size()), lerp(xs.size()), invalid_start(K + 1, 0) {
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t px = 0; px < crop_width; ++px) {
        const int64_t i = k * crop_width + px;
        const CropAxis<T>& x = xs[i];
        if (!x.valid) invalid.push_back(px);
        lo[i] = x.valid ? x.lo : 0;
        hi[i] = x.valid ? x.hi : 0;
        nearest[i] = x.valid ? x.nearest : 0;
        lerp[i] = x.valid ? x.lerp : T(0);
      }
      invalid_start[k + 1] = static_cast<int64_t>(invalid.size());
    }
  }
};

// Horizontal pass of one image row `src` for every column of a box: h[px] is the reference's
// "t = TL + (TR - TL) * x_lerp" for that row.
template <typename scalar_t, typename T>
void lerp_plane_row(const scalar_t* src, const int64_t* lo, const int64_t* hi, const T* lerp, int64_t crop_width,
                    T* h) {
  for (int64_t px = 0; px < crop_width; ++px) {
    const T l = static_cast<T>(src[lo[px]]), rr = static_cast<T>(src[hi[px]]);
    h[px] = l + (rr - l) * lerp[px];
  }
}

// One crop channel of box k: plane [H, W] -> dst [crop_height, crop_width]. cache: two horizontally interpolated
// image rows of crop_width values each (LerpRowCache, crop_and_resize_channels_last.h), reused by consecutive crop
// rows.
template <typename scalar_t, typename T>
void crop_forward_plane(const CropAxis<T>* yk, const PlaneColumns<T>& cols, int64_t k, int64_t crop_height,
                        int64_t crop_width, bool nearest, scalar_t ext, const scalar_t* plane, int64_t W,
                        LerpRowCache<T>& cache, scalar_t* dst) {
  cache.tag[0] = cache.tag[1] = -1;  // the cached rows belong to another box or plane
  const int64_t* lo = cols.lo.data() + k * crop_width;
  const int64_t* hi = cols.hi.data() + k * crop_width;
  const T* lerp = cols.lerp.data() + k * crop_width;
  auto fill = [&](int64_t r, T* h) { lerp_plane_row(plane + r * W, lo, hi, lerp, crop_width, h); };
  for (int64_t py = 0; py < crop_height; ++py) {
    const CropAxis<T>& y = yk[py];
    scalar_t* out = dst + py * crop_width;
    if (!y.valid) {
      std::fill(out, out + crop_width, ext);
      continue;
    }
    if (nearest) {
      const scalar_t* src = plane + y.nearest * W;
      const int64_t* at = cols.nearest.data() + k * crop_width;
      for (int64_t px = 0; px < crop_width; ++px) out[px] = src[at[px]];
    } else {
      const int st = cache.get(y.lo, -1, fill);
      const int sb = cache.get(y.hi, st, fill);
      const T* t = cache.rows[st].data();
      const T* b = cache.rows[sb].data();
      const T yl = y.lerp;
      for (int64_t px = 0; px < crop_width; ++px) out[px] = static_cast<scalar_t>(t[px] + (b[px] - t[px]) * yl);
    }
    for (int64_t i = cols.invalid_start[k]; i < cols.invalid_start[k + 1]; ++i) out[cols.invalid[i]] = ext;
  }
}

// The cache lines each image's boxes read, as offsets in one of its planes: lines[line_start[n] ..
// line_start[n + 1]) for image n, row by row, each row from the leftmost to the rightmost column its boxes read
// there. A task prefetches them in the next plane while it computes the current one, so the plane's lines arrive
// from memory in parallel instead of one miss at a time as the boxes reach them; a row no box touches is never
// read.
struct TouchedRows {
  std::vector<int64_t> lines, line_start;

  template <typename scalar_t, typename T>
  TouchedRows(const CropTables<scalar_t, T>& tab, const int64_t* idx, int64_t K, int64_t N, int64_t H, int64_t W,
              int64_t crop_height, int64_t crop_width)
      : line_start(N + 1, 0) {
    // Row r of image n spans columns [x0, x1] at [n * H + r] (x0 > x1: none).
    std::vector<int64_t> x0(N * H, INT64_MAX), x1(N * H, -1);
    for (int64_t k = 0; k < K; ++k) {
      int64_t lo = INT64_MAX, hi = -1;
      for (int64_t px = 0; px < crop_width; ++px) {
        const CropAxis<T>& x = tab.xs[k * crop_width + px];
        if (!x.valid) continue;
        lo = std::min(lo, std::min(x.lo, x.nearest));
        hi = std::max(hi, std::max(x.hi, x.nearest));
      }
      if (hi < 0) continue;
      for (int64_t py = 0; py < crop_height; ++py) {
        const CropAxis<T>& y = tab.ys[k * crop_height + py];
        if (!y.valid) continue;
        for (const int64_t r : {y.lo, y.hi, y.nearest}) {
          x0[idx[k] * H + r] = std::min(x0[idx[k] * H + r], lo);
          x1[idx[k] * H + r] = std::max(x1[idx[k] * H + r], hi);
        }
      }
    }
    constexpr int64_t kLine = 64 / sizeof(scalar_t);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t r = 0; r < H; ++r) {
        const int64_t lo = x0[n * H + r], hi = x1[n * H + r];
        for (int64_t x = lo / kLine * kLine; x <= hi; x += kLine) lines.push_back(r * W + std::max(x, lo));
      }
      line_start[n + 1] = static_cast<int64_t>(lines.size());
    }
  }

  // Part `part` of `parts` of image n's lines in `plane`, prefetched.
  template <typename scalar_t>
  void prefetch(const scalar_t* plane, int64_t n, int64_t part, int64_t parts) const {
    const int64_t count = line_start[n + 1] - line_start[n];
    const int64_t* first = lines.data() + line_start[n];
    for (int64_t i = part * count / parts; i < (part + 1) * count / parts; ++i) prefetch_line(plane + first[i]);
  }
};

// One crop of cb interleaved planes (cell (py, px)'s cb values at crop + (py * crop_width + px) * cb) from `block`,
// a copy in cache of the planes, interleaved, W pixels a row: crop_forward_box with 16 planes, the block and window
// paths' full blocks, compiled for that count, so each tap's loops are one run of 16 values with no remainder to
// test. On 2 Xeon (Emerald Rapids) cores, AVX-512, the two alternated in one process under mimalloc: P2 forward 512
// x 14x14 14.6 -> 13.2 ms, 128 x 28x28 10.5 -> 9.8 ms (10.3 -> 9.9 in a second run), 32 P3 maps with one box each
// 1.53 -> 1.37 ms. The same for 256 channels in the channels_last forward gained 0-3%: not kept.
template <typename T, typename Hook = NoRowHook>
void crop_interleaved(const CropAxis<T>* yk, const CropAxis<T>* xk, int64_t crop_height, int64_t crop_width,
                      bool nearest, T ext, const T* block, int64_t W, int64_t cb, LerpRowCache<T>& cache, T* crop,
                      const Hook& before_row = Hook{}) {
  if (cb == kPlanesPerBlock) {
    crop_forward_box<kPlanesPerBlock>(yk, xk, crop_height, crop_width, nearest, ext, block, W, cb, cb, cache, crop, cb,
                         CropMemory::kInCache, before_row);
  } else {
    crop_forward_box(yk, xk, crop_height, crop_width, nearest, ext, block, W, cb, cb, cache, crop, cb,
                     CropMemory::kInCache, before_row);
  }
}

// Forward where the boxes read each plane many times over (P2, 512 boxes of 14x14: 400K taps of a 61K-pixel plane):
// split over (image, block of G planes). A task copies the pixels of its block that the boxes read (ReadRuns)
// interleaved, G channels per pixel, into a per-thread buffer that stays in cache (P2 forward, 128 x 28x28: 8.5 -> 7.6
// ms against the whole block, 2 Xeon cores), a box's rows just before its crop, the boxes taken in order of their first
// row: the rows a crop reads were written moments before and are still in L2 (a block of 16 P2 planes, 3.9 MB, is twice
// a Xeon core's L2; on 2 Xeon (Emerald Rapids) cores under mimalloc, two builds alternated in one process, 7 rounds:
// 128 x 28x28 7.58 -> 7.39 ms, 512 x 14x14 9.33 -> 8.66 ms against interleaving every row first), crops every box of
// the image from it with the channels_last kernel (each tap one contiguous run of G values, where a plane read costs a
// scalar gather per value), and writes each crop's [cells, G] back as G planes of out[k]. The copy reads the block
// once, which the boxes would have read several times; the values are those of crop_forward_plane. A crop's planes go
// out while the next crop computes, a part before each of its rows (store_planes_part), instead of in one burst after
// each crop, and the copy writes each interleaved line whole (transpose_matrix's order for short rows): on 2 Xeon
// (Emerald Rapids) cores under mimalloc, alternating builds, P2 forward 128 x 28x28 14.5-17.9 -> 8.6-9.8 ms, 512 x
// 14x14 12.2-14.0 -> 10.8-11.6 ms.
// Kernels that read the planes in place lost to this one with AVX2 (P2, 2 Zen 4 cores, forward 28x28 and 14x14):
// scalar loads 1.6x and 2.1x this path's time, AVX2 gathers 2.3-3.2x, taps permuted in registers from two 8-wide
// loads 1.5-2.1x. With AVX-512, 16-wide permutes win for float32 (crop_and_resize_narrow_boxes.h).
template <typename scalar_t, typename T>
void crop_forward_blocks(const CropTables<scalar_t, T>& tab, const std::vector<int64_t>& order,
                         const std::vector<int64_t>& start, const scalar_t* image, int64_t N, int64_t C, int64_t H,
                         int64_t W, int64_t crop_height, int64_t crop_width, bool nearest, scalar_t ext,
                         scalar_t* out) {
  // 16 planes per block where they fit amortize each tap's table reads over twice the channels of 8 (P2 512 x 14x14:
  // 17% faster than 8).
  const int64_t G = planes_per_block(H * W, sizeof(T));
  const int64_t cells = crop_height * crop_width, plane_size = H * W, blocks = (C + G - 1) / G;
  const int64_t K = static_cast<int64_t>(order.size());
  const ReadRuns read = crop_read_runs(tab, order, start, N, H, W, crop_height, crop_width, nearest);
  // Each image's boxes in order of the first row they read, so a task interleaves the rows a box reads just before
  // its crop, on top of the rows the boxes before it needed.
  std::vector<int64_t> by_row(order);
  for (int64_t n = 0; n < N; ++n) {
    std::stable_sort(by_row.begin() + start[n], by_row.begin() + start[n + 1],
                     [&](int64_t a, int64_t b) { return read.box_rows[a][0] < read.box_rows[b][0]; });
  }
  at::parallel_for(0, N * blocks, grain_for(K / std::max<int64_t>(N, 1) * cells * G),
                   [&](int64_t begin, int64_t end) {
    const auto block = uninitialized_buffer<T>(G * plane_size);  // read only where interleaved
    std::array<std::vector<T>, 2> crops{std::vector<T>(G * cells), std::vector<T>(G * cells)};
    std::vector<scalar_t> planes(G * cells);
    LerpRowCache<T> cache;
    for (auto& r : cache.rows) r.resize(crop_width * G);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks;
      const int64_t c0 = item % blocks * G;
      const int64_t cb = std::min(G, C - c0);
      const scalar_t* planes_in = image + (n * C + c0) * plane_size;
      int64_t interleaved = 0;  // rows [0, interleaved) of the block are in place
      auto interleave_to = [&](int64_t row) {  // the pixels the boxes read in rows [interleaved, row), interleaved
        if (row <= interleaved) return;
        const auto [first, last] = read.of_rows(n, interleaved, row);
        read.interleave(first, last, planes_in, cb, W, plane_size, block.get());
        interleaved = row;
      };
      // The previous box's crop and its planes c0 .. c0 + cb (one contiguous run of the output): streamed a part
      // before each row of the next crop (store_planes_part), the last box's after its crop.
      const T* pending = nullptr;
      scalar_t* pending_out = nullptr;
      auto store_pending = [&](int64_t part, int64_t parts) {
        if (pending) store_planes_part(pending, cells, cb, planes.data(), pending_out, part, parts);
      };
      for (int64_t j = start[n]; j < start[n + 1]; ++j) {
        const int64_t k = by_row[j];
        interleave_to(read.box_rows[k][1]);
        T* crop = crops[j % 2].data();
        crop_interleaved(tab.ys.data() + k * crop_height, tab.xs.data() + k * crop_width, crop_height, crop_width,
                         nearest, static_cast<T>(ext), block.get(), W, cb, cache, crop,
                         [&](int64_t py) { store_pending(py, crop_height); });
        pending = crop;
        pending_out = out + (k * C + c0) * cells;
      }
      store_pending(0, 1);
    }
#ifdef __AVX2__
    _mm_sfence();  // store_planes_part's streamed stores are visible before the task ends
#endif
  });
}

// Forward where the boxes read little of each plane (32 P3 maps with one 14x14 box each: one window of a
// 15K-pixel plane): split over (image, channel) planes, each read in place. A task crops every box of its image
// from its plane, reading only the pixels the boxes touch, with the next plane's touched lines prefetched while it
// computes.
template <typename scalar_t, typename T>
void crop_forward_sparse_planes(const CropTables<scalar_t, T>& tab, const int64_t* idx,
                                const std::vector<int64_t>& order, const std::vector<int64_t>& start,
                                const scalar_t* image, int64_t N, int64_t C, int64_t H, int64_t W,
                                int64_t crop_height, int64_t crop_width, bool nearest, scalar_t ext, scalar_t* out) {
  const int64_t K = static_cast<int64_t>(order.size()), cells = crop_height * crop_width;
  const PlaneColumns<T> cols(tab.xs, K, crop_width);
  const TouchedRows touched(tab, idx, K, N, H, W, crop_height, crop_width);
  at::parallel_for(0, N * C, grain_for(K / std::max<int64_t>(N, 1) * cells), [&](int64_t begin, int64_t end) {
    LerpRowCache<T> cache;
    for (auto& r : cache.rows) r.resize(crop_width);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / C, c = item % C;
      const scalar_t* plane = image + item * H * W;
      const int64_t boxes = start[n + 1] - start[n];
      if (item == begin) touched.prefetch(plane, n, 0, 1);
      for (int64_t j = start[n]; j < start[n + 1]; ++j) {
        const int64_t k = order[j];
        // The next plane's lines, spread over this plane's boxes: a few in flight at a time, while they compute.
        if (item + 1 < end) touched.prefetch(plane + H * W, (item + 1) / C, j - start[n], boxes);
        crop_forward_plane(tab.ys.data() + k * crop_height, cols, k, crop_height, crop_width, nearest, ext, plane, W,
                           cache, out + (k * C + c) * cells);
      }
    }
  });
}

// A box side's sample table shifted to start at pixel `first` (lo - first, hi - first, nearest - first): its
// samples read from a copy of the window that starts there.
template <typename T>
void shift_table(const CropAxis<T>* tab, int64_t count, int64_t first, std::vector<CropAxis<T>>& shifted) {
  shifted.assign(tab, tab + count);
  for (CropAxis<T>& a : shifted) {
    a.lo -= first;
    a.hi -= first;
    a.nearest -= first;
  }
}

// Planes per task of the window path: 16 x a 20x20 window x 4 B = 26 KB, in L1 while it is cropped.
constexpr int64_t kWindowPlanes = 16;

// Forward where the boxes read little of each map and C >= kChannelBlock (32 P3 maps with one 14x14 box each):
// split over (box, block of kWindowPlanes planes). A task copies the box's window of the block's planes, row
// segment by row segment (each a contiguous run of its plane), interleaved into a per-thread buffer, crops it with
// the channels_last kernel, and streams the crop back as the block's planes of out[k]. What it reads is the box's
// window, as a channels_last read would; the values are those of crop_forward_plane. The window's row segments are
// scattered (one per plane and row, 2-3 lines each), so each task prefetches the windows of the task two ahead: the
// segments then arrive in parallel instead of one miss at a time (3.7 -> 2.0 ms on 32 P3 maps, 2 cores), and the
// output streams past the cache, which keeps the maps' windows there for the next call.
template <typename scalar_t, typename T>
void crop_forward_windows(const CropTables<scalar_t, T>& tab, const int64_t* idx, const scalar_t* image, int64_t K,
                          int64_t C, int64_t H, int64_t W, int64_t crop_height, int64_t crop_width, bool nearest,
                          scalar_t ext, scalar_t* out) {
  const int64_t cells = crop_height * crop_width, plane_size = H * W;
  constexpr int64_t G = kWindowPlanes;
  const int64_t blocks = (C + G - 1) / G;
  // Each box's window (crop_window): spans[k] = {y0, y1, x0, x1}.
  std::vector<std::array<int64_t, 4>> spans(K);
  for (int64_t k = 0; k < K; ++k) spans[k] = crop_window(tab, k, crop_height, crop_width, nearest);
  // The window's row segments of item `item`'s planes, asked of memory ahead of their use.
  auto prefetch_item = [&](int64_t item) {
    const int64_t k = item / blocks, c0 = item % blocks * G, cb = std::min(G, C - c0);
    const auto [y0, y1, x0, x1] = spans[k];
    const scalar_t* planes = image + (idx[k] * C + c0) * plane_size;
    for (int64_t j = 0; j < cb; ++j) {
      for (int64_t r = y0; r < y1; ++r) prefetch_run(planes + j * plane_size + r * W + x0, x1 - x0);
    }
  };
  at::parallel_for(0, K * blocks, grain_for(cells * G), [&](int64_t begin, int64_t end) {
    std::vector<T> window, crop(G * cells);
    std::vector<scalar_t> planes_out(G * cells);
    std::vector<CropAxis<T>> ys, xs;  // box `shifted_for`'s tables, shifted to its window
    int64_t shifted_for = -1;
    LerpRowCache<T> cache;
    for (auto& r : cache.rows) r.resize(crop_width * G);
    for (int64_t item = begin; item < std::min(end, begin + 2); ++item) prefetch_item(item);
    for (int64_t item = begin; item < end; ++item) {
      if (item + 2 < end) prefetch_item(item + 2);
      const int64_t k = item / blocks, c0 = item % blocks * G, cb = std::min(G, C - c0);
      const auto [y0, y1, x0, x1] = spans[k];
      if (k != shifted_for) {  // a box's blocks are consecutive items: its tables are shifted once per task
        shift_table(tab.ys.data() + k * crop_height, crop_height, y0, ys);
        shift_table(tab.xs.data() + k * crop_width, crop_width, x0, xs);
        shifted_for = k;
      }
      const int64_t ww = x1 - x0;
      window.resize((y1 - y0) * ww * cb);
      const scalar_t* planes = image + (idx[k] * C + c0) * plane_size;
      for (int64_t r = y0; r < y1; ++r) {
        transpose_matrix(planes + r * W + x0, cb, ww, window.data() + (r - y0) * ww * cb, plane_size);
      }
      crop_interleaved(ys.data(), xs.data(), crop_height, crop_width, nearest, static_cast<T>(ext), window.data(), ww,
                       cb, cache, crop.data());
      store_planes(crop.data(), cells, cb, cells, planes_out.data(), out + (k * C + c0) * cells, /*cached=*/false);
    }
#ifdef __AVX2__
    _mm_sfence();  // store_planes' streamed stores are visible before the task ends
#endif
  });
}

// Whether an NCHW call's boxes tap its maps more often than they have pixels, with full blocks of channels to
// interleave (C = 3 gains nothing from it): the forward's block path and the image gradient's banded one.
inline bool dense_taps(int64_t K, int64_t crop_height, int64_t crop_width, int64_t N, int64_t C, int64_t H,
                       int64_t W) {
  return K * crop_height * crop_width * 4 >= N * H * W && C >= kChannelBlock;
}

// NCHW forward: with AVX-512, float32 bilinear crops up to 32 columns wide whose boxes are mostly narrow take the
// narrow path (crop_and_resize_narrow_boxes.h). Otherwise the block path when the boxes' taps outnumber the maps'
// pixels and there are full blocks of channels to interleave (C = 3 gains nothing from it), the window path for fewer
// taps, the sparse one for C < 8.
template <typename scalar_t, typename T>
void crop_forward_planes(const CropTables<scalar_t, T>& tab, const int64_t* idx, const std::vector<int64_t>& order,
                         const std::vector<int64_t>& start, const scalar_t* image, int64_t N, int64_t C, int64_t H,
                         int64_t W, int64_t crop_height, int64_t crop_width, bool nearest, scalar_t ext,
                         scalar_t* out) {
  const int64_t K = static_cast<int64_t>(order.size());
#ifdef __AVX512F__
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (!nearest && crop_width <= kNarrowWidth) {
      const NarrowTables t(tab, K, crop_height, crop_width, H, W, NarrowTables::aligned_planes(image, H, W));
      if (t.fits()) {
        crop_forward_narrow(t, order, start, image, N, C, H, W, dense_taps(K, crop_height, crop_width, N, C, H, W),
                            ext, out);
        return;
      }
    }
  }
#endif
  if (dense_taps(K, crop_height, crop_width, N, C, H, W)) {
    crop_forward_blocks(tab, order, start, image, N, C, H, W, crop_height, crop_width, nearest, ext, out);
  } else if (C >= kChannelBlock) {
    crop_forward_windows(tab, idx, image, K, C, H, W, crop_height, crop_width, nearest, ext, out);
  } else {
    crop_forward_sparse_planes(tab, idx, order, start, image, N, C, H, W, crop_height, crop_width, nearest, ext,
                               out);
  }
}

// Box k's image gradient into CB accumulator planes acc0 + j * plane_size, from its gradient g0 + j * gs_c
// (cell (py, px) at py * gs_y + px * gs_x), taps in the reference's order and with its expressions.
template <int64_t CB, typename scalar_t, typename T>
void crop_image_grad_planes_box(const CropAxis<T>* yk, const CropAxis<T>* xk, int64_t crop_height,
                                int64_t crop_width, bool nearest, const scalar_t* g0, int64_t gs_c, int64_t gs_y,
                                int64_t gs_x, int64_t W, int64_t plane_size, T* acc0) {
  for (int64_t py = 0; py < crop_height; ++py) {
    const CropAxis<T>& y = yk[py];
    if (!y.valid) continue;
    for (int64_t px = 0; px < crop_width; ++px) {
      const CropAxis<T>& x = xk[px];
      if (!x.valid) continue;
      T gv[CB];
      for (int64_t j = 0; j < CB; ++j) gv[j] = static_cast<T>(g0[j * gs_c + py * gs_y + px * gs_x]);
      if (nearest) {
        T* a = acc0 + y.nearest * W + x.nearest;
        for (int64_t j = 0; j < CB; ++j) a[j * plane_size] += gv[j];
        continue;
      }
      const T yl = y.lerp, xl = x.lerp;
      T* tl = acc0 + y.lo * W + x.lo;
      T* tr = acc0 + y.lo * W + x.hi;
      T* bl = acc0 + y.hi * W + x.lo;
      T* br = acc0 + y.hi * W + x.hi;
      // One loop per corner: two corners on one pixel (an integer coordinate) add in the reference's order.
      for (int64_t j = 0; j < CB; ++j) tl[j * plane_size] += (1 - xl) * ((1 - yl) * gv[j]);
      for (int64_t j = 0; j < CB; ++j) tr[j * plane_size] += xl * ((1 - yl) * gv[j]);
      for (int64_t j = 0; j < CB; ++j) bl[j * plane_size] += (1 - xl) * (yl * gv[j]);
      for (int64_t j = 0; j < CB; ++j) br[j * plane_size] += xl * (yl * gv[j]);
    }
  }
}

// Image gradient into the NCHW planes gi [N, C, H, W]: split over (image, channel block); the boxes of image n are
// order[start[n] .. start[n + 1]), in increasing k. g: the incoming gradient, read through its strides gs.
template <typename scalar_t, typename T>
void crop_image_grad_planes(const CropTables<scalar_t, T>& tab, const std::vector<int64_t>& order,
                            const std::vector<int64_t>& start, const scalar_t* g, const std::array<int64_t, 4>& gs,
                            int64_t N, int64_t C, int64_t H, int64_t W, int64_t crop_height, int64_t crop_width,
                            bool nearest, scalar_t* gi) {
  const int64_t plane_size = H * W, blocks = channel_blocks(C);
  constexpr bool direct = std::is_same_v<scalar_t, T>;  // float/double accumulate in the gradient itself
  const int64_t K = static_cast<int64_t>(order.size());
  const int64_t work = K / std::max<int64_t>(N, 1) * crop_height * crop_width * kChannelBlock * 4;
  at::parallel_for(0, N * blocks, grain_for(work), [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(direct ? 0 : kChannelBlock * plane_size);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks;
      bool full;
      const int64_t c0 = block_start(item % blocks, C, full);
      const int64_t cb = full ? kChannelBlock : 1;
      scalar_t* planes = gi + (n * C + c0) * plane_size;
      T* acc = direct ? reinterpret_cast<T*>(planes) : scratch.data();
      if constexpr (direct) {
        stream_zero(acc, cb * plane_size);  // few of its lines receive taps: no need to read them first
      } else {
        std::fill(acc, acc + cb * plane_size, T(0));
      }
      for (int64_t j = start[n]; j < start[n + 1]; ++j) {
        const int64_t k = order[j];
        const CropAxis<T>* yk = tab.ys.data() + k * crop_height;
        const CropAxis<T>* xk = tab.xs.data() + k * crop_width;
        const scalar_t* g0 = g + k * gs[0] + c0 * gs[1];
        if (full) {
          crop_image_grad_planes_box<kChannelBlock>(yk, xk, crop_height, crop_width, nearest, g0, gs[1], gs[2],
                                                    gs[3], W, plane_size, acc);
        } else {
          crop_image_grad_planes_box<1>(yk, xk, crop_height, crop_width, nearest, g0, gs[1], gs[2], gs[3], W,
                                        plane_size, acc);
        }
      }
      if (!direct) std::transform(acc, acc + cb * plane_size, planes, [](T v) { return static_cast<scalar_t>(v); });
    }
#ifdef __AVX2__
    _mm_sfence();  // stream_zero's stores are visible before the task ends
#endif
  });
}

// Box gradient, split over ranges of boxes (grouped by image, `order`): a range walks channel-outer, box-inner, so
// its boxes read each plane while it is in cache, and each box still sums channel, then cell, in the reference's
// order, reading the taps from its image's planes. sums[k]: (d y1, d x1, d y2, d x2).
template <typename scalar_t, typename T>
void crop_box_grad_planes(const CropTables<scalar_t, T>& tab, const int64_t* idx, const std::vector<int64_t>& order,
                          const scalar_t* image, const scalar_t* g, const std::array<int64_t, 4>& gs, int64_t C,
                          int64_t H, int64_t W, int64_t crop_height, int64_t crop_width,
                          std::vector<std::array<T, 4>>& sums) {
  const int64_t plane_size = H * W, K = static_cast<int64_t>(order.size());
  at::parallel_for(0, K, grain_for(crop_height * crop_width * C), [&](int64_t begin, int64_t end) {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t j = begin; j < end; ++j) {
        const int64_t k = order[j];
        const CropAxis<T>* yk = tab.ys.data() + k * crop_height;
        const CropAxis<T>* xk = tab.xs.data() + k * crop_width;
        const scalar_t* plane = image + (idx[k] * C + c) * plane_size;
        const scalar_t* gc = g + k * gs[0] + c * gs[1];
        T d_y1 = sums[k][0], d_x1 = sums[k][1], d_y2 = sums[k][2], d_x2 = sums[k][3];
        for (int64_t py = 0; py < crop_height; ++py) {
          const CropAxis<T>& y = yk[py];
          if (!y.valid) continue;
          const scalar_t* top = plane + y.lo * W;
          const scalar_t* bottom = plane + y.hi * W;
          const T yl = y.lerp;
          for (int64_t px = 0; px < crop_width; ++px) {
            const CropAxis<T>& x = xk[px];
            if (!x.valid) continue;
            const T tl = static_cast<T>(top[x.lo]), tr = static_cast<T>(top[x.hi]);
            const T bl = static_cast<T>(bottom[x.lo]), br = static_cast<T>(bottom[x.hi]);
            const T xl = x.lerp;
            const T gv = static_cast<T>(gc[py * gs[2] + px * gs[3]]);
            const TapSlopes<T> slope = tap_slopes(tl, tr, bl, br, xl, yl);
            const T gy = gv * slope.dy;
            const T gx = gv * slope.dx;
            d_y1 += gy * y.d_lo;
            d_x1 += gx * x.d_lo;
            d_y2 += gy * y.d_hi;
            d_x2 += gx * x.d_hi;
          }
        }
        sums[k] = {d_y1, d_x1, d_y2, d_x2};
      }
    }
  });
}

}  // namespace impls
