// crop_and_resize's float32 NCHW forward for crops at most 32 columns wide from narrow boxes (AVX-512): the planes
// read in place, each image row a box reads in registers.
//
// An image row of a box's window (at most 16 or 32 columns) is one or two 16-float loads, and each crop column's two
// taps come out of them by one permute each: a row's horizontal lerps t = L + (R - L) * x_lerp for 16 crop columns
// cost five vector instructions a plane, with no table read per column, and each image row is lerped once per plane,
// however many crop rows read it. A task takes (image, group of kNarrowGroup planes): the column tables are loaded
// into registers once per box and serve its 4 planes. Each box's crops of the group are one contiguous run of the
// output, built in L1 and streamed out (non-temporal, no read of the output's lines) a part at a time between the
// crop rows of the next box (rows_per_step). Where the boxes read every line of the planes (P2), the next task's
// lines are asked for meanwhile, in address order (PlanesAhead). The values are crop_forward_plane's: same
// expressions, same order, no contraction.
//
// Measured on 2 Xeon (Emerald Rapids) cores under mimalloc, this path and the one before it (interleaved blocks of 16
// planes, crop_forward_blocks, or the window path) alternated in one process, outputs bit-equal: P2 forward 512 x
// 14x14 6.63 -> 4.40 ms, 128 x 28x28 4.84 -> 3.47 ms, 32 P3 maps with one box each 1.09 -> 0.78 ms. Where it goes,
// P2 14x14: the horizontal lerps 1.9 ms and the vertical ones 1.1 ms with the planes hot in cache (1.9 and 1.2 ns a
// row and plane a core, where one core runs 2.6 permutes or 8 adds of 16 floats a ns in a loop of nothing else), the
// output's stream 2.1 ms alone, 4.4 ms together. Tried and not kept: prefetching the next box's rows or the next
// task's, box by box as they are read (P2 unchanged, P3 0.77 -> 0.82 ms; in address order they pay on P2,
// PlanesAhead), 64-byte streamed stores (5.12 -> 5.42 ms), the crops streamed in one burst after each box (P2 28x28
// 3.47 -> 3.65 ms) or before each image row (3.80 ms), 2 or 8 planes a task (P2 14x14 5.46 or 4.65 ms, 28x28 3.50 or
// 4.33 ms, P3 0.85 or 0.80 ms).
//
// A row's loads start at its window's first column, or, where the planes start on cache lines and the window fits in
// the lines loaded from there, at the start of that column's line: a window of at most 16 columns that fits in one
// line is then read as one line, not as the two lines an unaligned load of it spans, and one of at most 32 as two,
// not three. Where the time goes: P2 14x14 takes 3.40 ms, not 4.40, with every row's loads served from L1, and the
// 32 P3 maps 0.28 ms, not 0.75 (lines no core holds in L2). Measured as above: P2 14x14 4.36 -> 4.28 ms, 28x28 3.38
// -> 3.30 ms, P3 0.74 -> 0.66 ms (where W = 152, rows alternate between two shifts); loads always from the line's
// start, right or wrong, took 4.12, 3.20 and 0.63 ms, the most it could give. Prefetching the next task's rows into
// L1 or L2 lost again (P3 0.66 -> 0.68-0.69 ms).
#pragma once

#ifdef __AVX512F__
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "common/cpu_common.h"
#include "crop_and_resize/crop_and_resize_tables.h"

namespace impls {

// How a box's taps reach registers, per image row: one or two 16-float loads of its window (at most 16 or 32 columns
// wide, the loads inside its plane), each tap then permuted out of them; or gathered, one load per tap (a wider
// window, or one whose loads would pass its plane's end).
enum class NarrowTaps : uint8_t { kOneRegister, kTwoRegisters, kGathered };

// The kernel takes a call whose crops are at most kNarrowWidth columns wide (two registers) and where at most 1 box in
// kGatheredShare has its taps gathered.
constexpr int64_t kNarrowWidth = 32;
constexpr int64_t kGatheredShare = 8;

// Every box's columns and rows in the form the narrow kernel reads, computed once per call, for crops at most
// kNarrowWidth columns wide. Box k's crop columns come in chunks of 16 (chunks = ceil(crop_width / 16), at most 2);
// its image rows are the distinct rows its valid crop rows read, in order of first use ("slots").
struct NarrowTables {
  int64_t chunks, crop_height, crop_width, max_rows;
  std::vector<int64_t> x0, x1;                // [K]: the window's first column, and one past its last
  std::vector<NarrowTaps> taps;               // [K]
  std::vector<std::array<int32_t, 16>> lo;    // [K * chunks]: each column's left tap, relative to x0
  std::vector<std::array<int32_t, 16>> hi;    // right tap
  std::vector<std::array<float, 16>> lerp;    // x lerp; 0 for invalid columns
  std::vector<__mmask16> valid;               // [K * chunks]: valid columns
  std::vector<int64_t> rows, row_count;       // [K * max_rows]: slot j's image row; [K]: slots used
  std::vector<int32_t> shift;                 // [K * max_rows]: slot j's loads start this many columns before x0
  std::vector<int32_t> top, bottom;           // [K * crop_height]: crop row py's slots; top = -1: invalid row
  std::vector<float> ylerp;                   // [K * crop_height]

  // Whether every plane of image starts on a cache line, and so every line of its rows lies in one plane.
  static bool aligned_planes(const float* image, int64_t H, int64_t W) {
    return reinterpret_cast<uintptr_t>(image) % 64 == 0 && H * W % 16 == 0;
  }

  // Where row r's `registers` loads of the window's `width` columns from x0 start, in columns before x0: at the start
  // of x0's cache line where the window fits in the lines loaded from there (aligned planes), so that a window
  // which fits in one line costs one line, not the two an unaligned load of it spans; else at x0 (0). -1: the loads
  // would pass the plane's end either way.
  static int32_t row_shift(int64_t r, int64_t x0, int64_t width, int64_t registers, int64_t H, int64_t W,
                           bool aligned) {
    const int64_t first = r * W + x0, shift = first % 16;
    if (aligned && shift + width <= 16 * registers && first - shift + 16 * registers <= H * W) {
      return static_cast<int32_t>(shift);
    }
    return first + 16 * registers <= H * W ? 0 : -1;
  }

  // One register a row where the window is at most 16 columns wide and every row's load stays in its plane, else two
  // for at most 32, else gathered.
  static NarrowTaps taps_of(const std::array<int64_t, 4>& window, int64_t H, int64_t W, bool aligned) {
    const auto [y0, y1, x0, x1] = window;
    for (const int64_t registers : {1, 2}) {
      bool inside = x1 - x0 <= 16 * registers;
      for (int64_t r = y0; inside && r < y1; ++r) inside = row_shift(r, x0, x1 - x0, registers, H, W, aligned) >= 0;
      if (inside) return registers == 1 ? NarrowTaps::kOneRegister : NarrowTaps::kTwoRegisters;
    }
    return NarrowTaps::kGathered;
  }

  NarrowTables(const CropTables<float, float>& tab, int64_t K, int64_t crop_height, int64_t crop_width, int64_t H,
               int64_t W, bool aligned)
      : chunks((crop_width + 15) / 16), crop_height(crop_height), crop_width(crop_width), max_rows(2 * crop_height),
        x0(K), x1(K), taps(K), lo(K * chunks), hi(K * chunks), lerp(K * chunks), valid(K * chunks),
        rows(K * max_rows), row_count(K), shift(K * max_rows), top(K * crop_height), bottom(K * crop_height),
        ylerp(K * crop_height) {
    TORCH_INTERNAL_ASSERT(crop_width <= kNarrowWidth, "NarrowTables: crops wider than kNarrowWidth");
    for (int64_t k = 0; k < K; ++k) {
      const std::array<int64_t, 4> window = crop_window(tab, k, crop_height, crop_width, /*nearest=*/false);
      x0[k] = window[2];
      x1[k] = window[3];
      taps[k] = taps_of(window, H, W, aligned);
      const int64_t width = x1[k] - x0[k], registers = taps[k] == NarrowTaps::kTwoRegisters ? 2 : 1;
      for (int64_t q = 0; q < chunks; ++q) {
        __mmask16 v = 0;
        for (int64_t lane = 0; lane < 16; ++lane) {
          const int64_t px = q * 16 + lane;
          const bool ok = px < crop_width && tab.xs[k * crop_width + px].valid;
          const CropAxis<float>& x = tab.xs[k * crop_width + std::min(px, crop_width - 1)];
          lo[k * chunks + q][lane] = ok ? static_cast<int32_t>(x.lo - x0[k]) : 0;
          hi[k * chunks + q][lane] = ok ? static_cast<int32_t>(x.hi - x0[k]) : 0;
          lerp[k * chunks + q][lane] = ok ? x.lerp : 0.0f;
          if (ok) v = static_cast<__mmask16>(v | (1u << lane));
        }
        valid[k * chunks + q] = v;
      }
      int64_t used = 0;
      auto slot = [&](int64_t r) {  // consecutive crop rows read neighbouring rows: a repeat is a last-two slot
        for (int64_t s = std::max<int64_t>(0, used - 2); s < used; ++s) {
          if (rows[k * max_rows + s] == r) return static_cast<int32_t>(s);
        }
        rows[k * max_rows + used] = r;
        shift[k * max_rows + used] =
            taps[k] == NarrowTaps::kGathered ? 0 : row_shift(r, x0[k], width, registers, H, W, aligned);
        return static_cast<int32_t>(used++);
      };
      for (int64_t py = 0; py < crop_height; ++py) {
        const CropAxis<float>& y = tab.ys[k * crop_height + py];
        const int64_t i = k * crop_height + py;
        top[i] = y.valid ? slot(y.lo) : -1;
        bottom[i] = y.valid ? slot(y.hi) : -1;
        ylerp[i] = y.valid ? y.lerp : 0.0f;
      }
      row_count[k] = used;
    }
  }

  // Whether the narrow kernel takes the call: at most 1 box in kGatheredShare has its taps gathered.
  bool fits() const {
    const auto gathered = std::count(taps.begin(), taps.end(), NarrowTaps::kGathered);
    return gathered * kGatheredShare <= static_cast<int64_t>(taps.size());
  }
};

// Crop rows between two steps of the work crop_forward_narrow interleaves with a box's (before_row): 2 for crops one
// register wide, 1 for two: a step every 8 vectors of a group's crops. Alternated in one process on a 2-core Xeon
// with 1.25 MB of L2 a core, bit-equal: P2 512 x 14x14 8.91 -> 8.46 ms (11 rounds; 8.77 -> 8.42 in another run)
// against a step every row; a step every other row of a 28x28 crop lost, 6.03 -> 6.32 ms.
constexpr int64_t rows_per_step(int64_t chunks) { return chunks == 1 ? 2 : 1; }

// Box k's crops of CB planes (planes + c * plane_size, each [H, W]) into dst [CB, crop_height, crop_width], for Q
// chunks of 16 columns, its taps fetched as TAPS says, each row's loads starting its shift before the window. h:
// per-thread scratch of max_rows * CB * Q * 16 floats, each image row's horizontal lerps t = L + (R - L) * x_lerp.
// The column tables are loaded into registers once per box and serve all its planes, which give CB independent
// chains per row. Each crop row is stored 16 columns at a time, whole registers where they stay inside the plane's
// crop (the columns past a row's end land on the rows after it, written later), masked to the row where they would
// not. before_row(py) runs before every rows_per_step(Q)-th crop row py is computed (crop_forward_narrow streams a
// part of the previous box's crops there).
template <int Q, NarrowTaps TAPS, int64_t CB, typename Hook>
void crop_narrow_box(const NarrowTables& t, int64_t k, const float* planes, int64_t plane_size, int64_t W, float ext,
                     float* h, float* dst, const Hook& before_row) {
  const int64_t cw = t.crop_width, ch = t.crop_height, cells = ch * cw;
  __m512i li[Q], ri[Q], ls[Q], rs[Q];  // each column's taps from x0; from the row's first load (x0 - shift)
  __m512 xl[Q];
  __mmask16 valid[Q];
  for (int q = 0; q < Q; ++q) {
    const int64_t c = k * Q + q;
    li[q] = _mm512_loadu_si512(t.lo[c].data());
    ri[q] = _mm512_loadu_si512(t.hi[c].data());
    ls[q] = li[q];
    rs[q] = ri[q];
    xl[q] = _mm512_loadu_ps(t.lerp[c].data());
    valid[q] = t.valid[c];
  }
  const float* base = planes + t.x0[k];
  const int64_t* rows = t.rows.data() + k * t.max_rows;
  const int32_t* shifts = t.shift.data() + k * t.max_rows;
  const int64_t row_count = t.row_count[k];
  int32_t held = 0;  // ls and rs's shift
  for (int64_t s = 0; s < row_count; ++s) {
    const int32_t shift = shifts[s];
    if (shift != held) {  // rows of a box share their shift where W is a multiple of 16
      held = shift;
      for (int q = 0; q < Q; ++q) {
        ls[q] = _mm512_add_epi32(li[q], _mm512_set1_epi32(shift));
        rs[q] = _mm512_add_epi32(ri[q], _mm512_set1_epi32(shift));
      }
    }
    const float* row = base + rows[s] * W - shift;
    for (int64_t c = 0; c < CB; ++c) {
      const float* src = row + c * plane_size;
      const __m512 a = TAPS == NarrowTaps::kGathered ? __m512{} : _mm512_loadu_ps(src);
      const __m512 b = TAPS == NarrowTaps::kTwoRegisters ? _mm512_loadu_ps(src + 16) : __m512{};
      for (int q = 0; q < Q; ++q) {
        __m512 l, r;
        if constexpr (TAPS == NarrowTaps::kOneRegister) {
          l = _mm512_permutex2var_ps(a, ls[q], a);  // indices below 16: lanes of a; no undefined source
          r = _mm512_permutex2var_ps(a, rs[q], a);
        } else if constexpr (TAPS == NarrowTaps::kTwoRegisters) {
          l = _mm512_permutex2var_ps(a, ls[q], b);
          r = _mm512_permutex2var_ps(a, rs[q], b);
        } else {
          l = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), __mmask16(0xFFFF), ls[q], src, 4);
          r = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), __mmask16(0xFFFF), rs[q], src, 4);
        }
        _mm512_store_ps(h + ((s * CB + c) * Q + q) * 16, _mm512_add_ps(l, _mm512_mul_ps(_mm512_sub_ps(r, l), xl[q])));
      }
    }
  }
  const __m512 e = _mm512_set1_ps(ext);
  const __mmask16 last = static_cast<__mmask16>(0xFFFFu >> (Q * 16 - cw));  // the last chunk's columns
  for (int64_t py = 0; py < ch; ++py) {
    const int64_t i = k * ch + py;
    const int32_t st = t.top[i], sb = t.bottom[i];
    const __m512 yl = _mm512_set1_ps(t.ylerp[i]);
    if (py % rows_per_step(Q) == 0) before_row(py);
    for (int64_t c = 0; c < CB; ++c) {
      float* out = dst + c * cells + py * cw;
      for (int q = 0; q < Q; ++q) {
        __m512 v = e;
        if (st >= 0) {
          const __m512 top = _mm512_load_ps(h + ((st * CB + c) * Q + q) * 16);
          const __m512 bottom = _mm512_load_ps(h + ((sb * CB + c) * Q + q) * 16);
          v = _mm512_add_ps(top, _mm512_mul_ps(_mm512_sub_ps(bottom, top), yl));
          if (valid[q] != 0xFFFF) v = _mm512_mask_blend_ps(valid[q], e, v);
        }
        if (py * cw + q * 16 + 16 <= cells) {
          _mm512_storeu_ps(out + q * 16, v);
        } else {
          _mm512_mask_storeu_ps(out + q * 16, q == Q - 1 ? last : __mmask16(0xFFFF), v);
        }
      }
    }
  }
}

// crop_narrow_box for box k compiled for its taps, the crops' chunks and CB planes (kNarrowGroup, or 1 for the
// planes past the last whole group).
template <int64_t CB, typename Hook>
void crop_narrow_box_of(const NarrowTables& t, int64_t k, const float* planes, int64_t plane_size, int64_t W,
                        float ext, float* h, float* dst, const Hook& before_row) {
  auto run = [&](auto q) {
    constexpr int Q = decltype(q)::value;
    switch (t.taps[k]) {
      case NarrowTaps::kOneRegister:
        return crop_narrow_box<Q, NarrowTaps::kOneRegister, CB>(t, k, planes, plane_size, W, ext, h, dst, before_row);
      case NarrowTaps::kTwoRegisters:
        return crop_narrow_box<Q, NarrowTaps::kTwoRegisters, CB>(t, k, planes, plane_size, W, ext, h, dst, before_row);
      case NarrowTaps::kGathered:
        return crop_narrow_box<Q, NarrowTaps::kGathered, CB>(t, k, planes, plane_size, W, ext, h, dst, before_row);
    }
  };
  if (t.chunks == 1) {
    run(std::integral_constant<int, 1>{});
  } else {
    run(std::integral_constant<int, 2>{});
  }
}

// One register's worth of floats, aligned for its aligned loads and stores.
struct alignas(64) Lanes16 {
  float v[16];
};

// Rows [y0, y1) x columns [x0, x1) of an image's planes: where its boxes read them.
struct PlaneSpan {
  int64_t y0, y1, x0, x1;
};

// The lines of the next task's planes that its boxes read, asked of memory ahead (prefetch_line, into L2) in
// address order, a share at a time between other work: a part between the crop rows of the current task's boxes
// (rows_per_step; crop_forward_narrow, where the boxes tap every pixel of the planes several times over, P2). Its
// boxes then find most of their rows in L2 where they would wait on memory for each, scattered line by line; and a
// sweep in address order lets the core's own prefetchers run ahead of it, where the scattered misses of the boxes
// share the line fill buffers with the output's streamed stores.
class PlanesAhead {
 public:
  // The lines of span in planes[0 .. count) (each plane_size floats, rows of W), spread over `steps` calls of step().
  void start(const float* planes, int64_t count, int64_t plane_size, int64_t W, const PlaneSpan& span,
             int64_t steps) {
    planes_ = planes;
    count_ = count;
    plane_size_ = plane_size;
    W_ = W;
    span_ = span;
    plane_ = 0;
    row_ = span.y0;
    const int64_t lines = count * (span.y1 - span.y0) * ((span.x1 - span.x0 + 15) / 16 + 1);
    per_step_ = (lines + steps - 1) / std::max<int64_t>(steps, 1);
    if (span.y0 >= span.y1 || span.x0 >= span.x1) plane_ = count;  // nothing to read
    enter_row();
  }
  // Its place is held in locals while it runs: kept in the members, each line's pointer went through memory (the
  // crop's vector stores may alias them), a store-to-load chain per line. Alternated in one process on a 2-core
  // Xeon with 1.25 MB of L2 a core, 7 rounds, bit-equal: P2 14x14 8.97 -> 8.77 ms, 28x28 6.16 -> 6.03 ms.
  void step() {
    if (plane_ >= count_) return;
    const float* at = at_;
    const float* last = last_;
    for (int64_t i = 0; i < per_step_; ++i) {
      prefetch_line(at);
      at += 16;
      if (at > last) {
        next_row();
        if (plane_ >= count_) return;
        at = at_;
        last = last_;
      }
    }
    at_ = at;
  }

 private:
  // The row's lines from the one that holds column x0 to the one that holds x1 - 1.
  void enter_row() {
    if (plane_ >= count_) return;
    const float* row = planes_ + plane_ * plane_size_ + row_ * W_;
    at_ = reinterpret_cast<const float*>(reinterpret_cast<uintptr_t>(row + span_.x0) / 64 * 64);
    last_ = row + span_.x1 - 1;
  }
  void next_row() {
    if (++row_ == span_.y1) {
      row_ = span_.y0;
      ++plane_;
    }
    enter_row();
  }

  const float* planes_ = nullptr;
  const float* at_ = nullptr;    // the next line to ask for
  const float* last_ = nullptr;  // the row's last value read
  int64_t count_ = 0, plane_size_ = 0, W_ = 0, plane_ = 0, row_ = 0, per_step_ = 0;
  PlaneSpan span_{};
};

// Planes a task crops together: 4 P2 planes (1 MB) stay in a Xeon core's 2 MB L2 while its boxes read them, a 14x14
// crop of 4 planes is whole cache lines (49), and 4 independent chains a row keep the vector ports busy.
constexpr int64_t kNarrowGroup = 4;

// NCHW float32 bilinear forward of crops at most kNarrowWidth columns wide whose boxes' taps are mostly in registers
// (t.fits(), t built on image): split over (image, group of kNarrowGroup planes, then the planes past the last whole
// group one by one); each box's crops of the group are built in L1 and go out as one run of out[k] (stream_copy).
// `ahead`: the boxes tap every pixel of the planes several times over (dense_taps), so a task asks for the next
// group's lines while it crops the current one (PlanesAhead). On a 2-core Xeon reporting 480 MB of L3, under
// mimalloc, with and without, alternated in one process, 9 rounds, outputs bit-equal: P2 512 x 14x14 7.92 -> 6.92
// ms, 128 x 28x28 5.29 -> 5.03 ms (4.69 -> 4.75 in another run); on a 2-core Xeon with 1.25 MB of L2 a core (the
// current and the next group's lines, 2 MB, do not both fit), 9 rounds: 10.17 -> 9.33 ms and 7.00 -> 6.63 ms, where
// 2 planes a task instead of 4 lost (9.34 -> 10.78 ms). With the boxes' plane loads served from L1 instead,
// P2 14x14 takes 2.5 ms, not 4.3, with no output written: it waits on those loads. Asked with prefetcht0 it gained
// less (7.31 ms), with prefetcht2 as much (7.01), and at twice the rate less (7.41).
inline void crop_forward_narrow(const NarrowTables& t, const std::vector<int64_t>& order,
                                const std::vector<int64_t>& start, const float* image, int64_t N, int64_t C,
                                int64_t H, int64_t W, bool ahead, float ext, float* out) {
  const int64_t K = static_cast<int64_t>(order.size()), cells = t.crop_height * t.crop_width, plane_size = H * W;
  // Each image's boxes in order of the first row they read: consecutive boxes read neighbouring lines.
  std::vector<int64_t> by_row(order);
  for (int64_t n = 0; n < N; ++n) {
    std::stable_sort(by_row.begin() + start[n], by_row.begin() + start[n + 1],
                     [&](int64_t a, int64_t b) { return t.rows[a * t.max_rows] < t.rows[b * t.max_rows]; });
  }
  // Where each image's boxes read its planes: the rows and columns of their windows (a box that reads nothing, all
  // its samples outside the map, widens neither).
  std::vector<PlaneSpan> spans(N, PlaneSpan{H, 0, W, 0});
  for (int64_t n = 0; ahead && n < N; ++n) {
    PlaneSpan& span = spans[n];
    for (int64_t j = start[n]; j < start[n + 1]; ++j) {
      const int64_t k = order[j];
      if (t.row_count[k] == 0 || t.x1[k] <= t.x0[k]) continue;
      const int64_t* rows = t.rows.data() + k * t.max_rows;
      for (int64_t s = 0; s < t.row_count[k]; ++s) {
        span.y0 = std::min(span.y0, rows[s]);
        span.y1 = std::max(span.y1, rows[s] + 1);
      }
      span.x0 = std::min(span.x0, t.x0[k]);
      span.x1 = std::max(span.x1, t.x1[k]);
    }
  }
  const int64_t whole = C / kNarrowGroup, groups = whole + C % kNarrowGroup;
  // Steps of before_row a box takes.
  const int64_t steps = (t.crop_height + rows_per_step(t.chunks) - 1) / rows_per_step(t.chunks);
  // Item `item`'s image, its first channel and its number of planes.
  auto group_of = [&](int64_t item) {
    const int64_t n = item / groups, g = item % groups;
    const int64_t c0 = g < whole ? g * kNarrowGroup : whole * kNarrowGroup + (g - whole);
    return std::array<int64_t, 3>{n, c0, g < whole ? kNarrowGroup : 1};
  };
  at::parallel_for(0, N * groups, grain_for(K / std::max<int64_t>(N, 1) * cells * kNarrowGroup),
                   [&](int64_t begin, int64_t end) {
    std::vector<Lanes16> h(t.max_rows * kNarrowGroup * t.chunks);
    std::array<std::vector<float>, 2> crops{std::vector<float>(kNarrowGroup * cells),
                                            std::vector<float>(kNarrowGroup * cells)};
    float* hs = reinterpret_cast<float*>(h.data());
    // The previous box's crops: streamed a part at each step of the next box, the last box's after it.
    StreamedRun<float> pending;
    PlanesAhead next;
    int64_t parity = 0;
    auto before_row = [&](int64_t) {
      pending.step();
      next.step();
    };
    for (int64_t item = begin; item < end; ++item) {
      const auto [n, c0, cb] = group_of(item);
      const float* planes = image + (n * C + c0) * plane_size;
      if (ahead && item + 1 < end) {
        const auto [next_n, next_c0, next_cb] = group_of(item + 1);
        next.start(image + (next_n * C + next_c0) * plane_size, next_cb, plane_size, W, spans[next_n],
                   (start[n + 1] - start[n]) * steps);
      }
      for (int64_t j = start[n]; j < start[n + 1]; ++j) {
        const int64_t k = by_row[j];
        float* crop = crops[parity ^= 1].data();
        if (cb == kNarrowGroup) {
          crop_narrow_box_of<kNarrowGroup>(t, k, planes, plane_size, W, ext, hs, crop, before_row);
        } else {
          crop_narrow_box_of<1>(t, k, planes, plane_size, W, ext, hs, crop, before_row);
        }
        pending.start(crop, out + (k * C + c0) * cells, cb * cells, steps);
      }
    }
    pending.finish();
    _mm_sfence();  // stream_copy's streamed stores are visible before the task ends
  });
}

}  // namespace impls
#endif
