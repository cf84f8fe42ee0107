// Helpers shared by the CPU kernels of both operators.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Exception.h>

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace impls {

#ifdef __AVX2__
// r[i][j] <- r[j][i] for an 8x8 tile of floats held in 8 registers.
inline void transpose8x8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}
#endif

#ifdef __AVX512F__
// r[i][j] <- r[j][i] for a 16x16 tile of floats held in 16 registers.
// GCC 12 warns "may be used uninitialized" inside its own AVX-512 shuffle intrinsics (their _mm512_undefined_ps
// pass-through operand), not about this code: the warning is off for this function only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {  // 32-bit pairs of rows i and i + 1
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // 64-bit pairs: 4 rows in each 128-bit lane
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 16; i += 8) {  // 128-bit lanes of 8 rows
    for (int j = i; j < i + 4; ++j) {
      t[j] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0x88);
      t[j + 4] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0xdd);
    }
  }
  for (int j = 0; j < 8; ++j) {  // 128-bit lanes of the 16 rows
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
}
#pragma GCC diagnostic pop
#endif

// dst[i] = src[i] for i < n, for a dst written once and not read again soon: values (float, double, the 16-bit
// types) from the first 32-byte aligned address on go out with non-temporal stores, whole lines in order (no read of
// each line before its write, as a cached store does). The writer issues _mm_sfence before another thread may read
// them.
template <typename scalar_t>
void stream_copy(const scalar_t* src, scalar_t* dst, int64_t n) {
  int64_t i = 0;
#ifdef __AVX2__
  if constexpr (std::is_trivially_copyable_v<scalar_t> && 32 % sizeof(scalar_t) == 0) {
    constexpr int64_t kLanes = 32 / sizeof(scalar_t);
    for (; i < n && reinterpret_cast<uintptr_t>(dst + i) % 32 != 0; ++i) dst[i] = src[i];
    for (; i + kLanes <= n; i += kLanes) {
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    }
  }
#endif
  std::copy(src + i, src + n, dst + i);
}

// A run dst[0 .. n) = src[0 .. n) streamed out (stream_copy) a step at a time between other work, e.g. a crop's
// planes a part before each row of the next crop (crop_forward_narrow): its stores never arrive in one burst. Each
// step streams whole lines of dst, the first one also the run's unaligned head, the last its tail; start() first
// finishes the run before.
template <typename scalar_t>
class StreamedRun {
 public:
  void start(const scalar_t* src, scalar_t* dst, int64_t n, int64_t steps) {
    finish();
    constexpr int64_t kLine = 64 / sizeof(scalar_t);
    const auto misalign = static_cast<int64_t>(reinterpret_cast<uintptr_t>(dst) / sizeof(scalar_t) % kLine);
    head_ = std::min<int64_t>(n, (kLine - misalign) % kLine);
    const int64_t lines = (n - head_ + kLine - 1) / kLine;
    step_ = (lines + steps - 1) / std::max<int64_t>(steps, 1) * kLine;
    src_ = src;
    dst_ = dst;
    n_ = n;
    done_ = 0;
  }
  void step() {
    if (done_ >= n_) return;
    const int64_t end = std::min(n_, (done_ == 0 ? head_ : done_) + step_);
    stream_copy(src_ + done_, dst_ + done_, end - done_);
    done_ = end;
  }
  void finish() {
    if (done_ < n_) stream_copy(src_ + done_, dst_ + done_, n_ - done_);
    done_ = n_;
  }

 private:
  const scalar_t* src_ = nullptr;
  scalar_t* dst_ = nullptr;
  int64_t n_ = 0, done_ = 0, head_ = 0, step_ = 0;
};

// A channels-last accumulator [plane_size, slice_c] rounded into slice_c of a channels_last output's C channels.
// Where the accumulator's type is the output's and every pixel's run is whole cache lines (float P2 gradients of
// crop_and_resize and roi_align), the runs are streamed (stream_copy): the gradient is written once, and a cached
// store would read each line first (on 2 cores, crop_and_resize channels_last fwd+bwd P2 128 x 28x28 16.6 -> 14.3
// ms, where the band was zeroed and accumulated in place).
template <typename scalar_t, typename T>
void store_channels_last(const T* acc, int64_t plane_size, int64_t slice_c, int64_t C, scalar_t* out0) {
  if constexpr (std::is_same_v<T, scalar_t>) {
    constexpr int64_t kLine = 64 / sizeof(scalar_t);
    if (reinterpret_cast<uintptr_t>(out0) % 64 == 0 && C % kLine == 0 && slice_c % kLine == 0) {
      for (int64_t p = 0; p < plane_size; ++p) stream_copy(acc + p * slice_c, out0 + p * C, slice_c);
      return;
    }
  }
  for (int64_t p = 0; p < plane_size; ++p) {
    const T* src = acc + p * slice_c;
    scalar_t* dst = out0 + p * C;
    for (int64_t c = 0; c < slice_c; ++c) dst[c] = static_cast<scalar_t>(src[c]);
  }
}

// dst[i] = 0 for i < n, for a dst that is written once before few of its elements are read again (a sparse
// gradient's planes): float and double from the first 32-byte aligned address on go out with non-temporal stores,
// which write whole lines without first reading them, as a cached store does. 32 P3 maps' image gradient (498 MB,
// 2.6% of it then receives taps): fwd+bwd 18.5 -> 12 ms on 2 Zen 4 cores. The writer issues _mm_sfence before
// another thread may read them.
template <typename scalar_t>
void stream_zero(scalar_t* dst, int64_t n) {
  int64_t i = 0;
#ifdef __AVX2__
  if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
    for (; i < n && reinterpret_cast<uintptr_t>(dst + i) % 32 != 0; ++i) dst[i] = 0;
    constexpr int64_t kLanes = 32 / sizeof(scalar_t);
    for (; i + kLanes <= n; i += kLanes) {
      if constexpr (std::is_same_v<scalar_t, float>) {
        _mm256_stream_ps(dst + i, _mm256_setzero_ps());
      } else {
        _mm256_stream_pd(dst + i, _mm256_setzero_pd());
      }
    }
  }
#endif
  std::fill(dst + i, dst + n, scalar_t(0));
}

// Asks for the cache line of p ahead of its use, into L2 (prefetcht1): L2 keeps more misses in flight than L1, and
// crop_and_resize's NCHW kernels ask for hundreds of scattered lines at a time (32 P3 maps, one box each: 16 planes
// x 20 rows x 2 lines per task). Measured on 2 Zen 4 cores: the window path took 3.7 ms with no prefetch, 3.8 ms
// with prefetcht0, 2.0 ms with prefetcht1, 3.4 ms with prefetchnta.
// NB: an asm statement, not __builtin_prefetch: GCC 12 dropped every __builtin_prefetch (and _mm_prefetch) of
// these loops once inlined into the OpenMP-outlined task (no prefetch instruction in the built library).
template <typename scalar_t>
inline void prefetch_line(const scalar_t* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht1 %0" : : "m"(*p));
#else
  __builtin_prefetch(p, 0, 2);
#endif
}

// Every cache line of the contiguous run p[0 .. n), prefetched (prefetch_line); n = 0 asks for nothing.
template <typename scalar_t>
inline void prefetch_run(const scalar_t* p, int64_t n) {
  constexpr int64_t kLine = 64 / sizeof(scalar_t);
  if (n <= 0) return;
  for (int64_t i = 0; i < n; i += kLine) prefetch_line(p + i);
  prefetch_line(p + n - 1);  // the last line, when p is not aligned to one
}

inline void check_box_index(const int64_t* box_index, int64_t num_boxes, int64_t batch) {
  for (int64_t k = 0; k < num_boxes; ++k) {
    TORCH_CHECK(box_index[k] >= 0 && box_index[k] < batch, "box_index[", k, "] = ", box_index[k],
                " is out of range for a batch of ", batch, " images");
  }
}

// Boxes grouped by image, each group in increasing k: order[start[n] .. start[n + 1]) are image n's boxes.
// Walking a group in this order reproduces the reference's accumulation order for that image's elements.
inline void boxes_by_image(const int64_t* batch_of_box, int64_t num_boxes, int64_t batch,
                           std::vector<int64_t>& order, std::vector<int64_t>& start) {
  start.assign(batch + 1, 0);
  for (int64_t k = 0; k < num_boxes; ++k) ++start[batch_of_box[k] + 1];
  for (int64_t n = 0; n < batch; ++n) start[n + 1] += start[n];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  order.resize(num_boxes);
  for (int64_t k = 0; k < num_boxes; ++k) order[fill[batch_of_box[k]]++] = k;
}

// Channels processed together by the CPU kernels: a sample's geometry (table loads, weights, branches) is read
// once per block instead of once per channel, and the block's kChannelBlock sums are independent dependency
// chains. 8: 8 float accumulators plus the weights still fit in the 16 SSE registers of a plain x86-64 build.
constexpr int64_t kChannelBlock = 8;

// Planes per interleaved block of the NCHW forwards (crop_and_resize's block path, roi_align's): kPlanesPerBlock
// where that many copies of a plane of plane_size values of `bytes` each fit in 8 MB (P2, float: 16 x 243 KB = 3.9
// MB, in L3), so each tap's channels are one AVX-512 vector of float and each sample's table reads, weights and
// offsets serve 16 channels; else kChannelBlock.
constexpr int64_t kPlanesPerBlock = 16;
inline int64_t planes_per_block(int64_t plane_size, int64_t bytes) {
  return kPlanesPerBlock * plane_size * bytes <= (int64_t{8} << 20) ? kPlanesPerBlock : kChannelBlock;
}

// Channel blocks of C channels: C / kChannelBlock full blocks, then the C % kChannelBlock remaining channels
// one by one. e.g. C = 256: 32 blocks; C = 3: 3 blocks of one channel.
inline int64_t channel_blocks(int64_t C) { return C / kChannelBlock + C % kChannelBlock; }

// The first channel of block b and whether the block is full (kChannelBlock channels) or a single channel.
inline int64_t block_start(int64_t b, int64_t C, bool& full) {
  const int64_t full_blocks = C / kChannelBlock;
  full = b < full_blocks;
  return full ? b * kChannelBlock : full_blocks * kChannelBlock + (b - full_blocks);
}

#ifdef __AVX2__
// Types whose 8 values go through an AVX2 float register: float; bfloat16 (the upper half of a float: widened
// exactly, narrowed with c10::BFloat16's own rounding, below); float16 where the build has F16C (setup.py), whose
// vcvtps2ph is c10::Half's own conversion then.
template <typename V>
constexpr bool kTileType = std::is_same_v<V, float> || std::is_same_v<V, c10::BFloat16>
#ifdef __F16C__
                           || std::is_same_v<V, c10::Half>
#endif
    ;

// 8 values at p as floats.
template <typename V>
inline __m256 load8_float(const V* p) {
  if constexpr (std::is_same_v<V, float>) {
    return _mm256_loadu_ps(p);
#ifdef __F16C__
  } else if constexpr (std::is_same_v<V, c10::Half>) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
  } else {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
}

// 8 floats stored at p as V: bfloat16 rounded to nearest even, NaN as 0x7FC0, as c10::BFloat16(float) rounds;
// float16 by vcvtps2ph, to nearest even, as c10::Half(float) converts under F16C.
template <typename V>
inline void store8_float(V* p, __m256 v) {
  if constexpr (std::is_same_v<V, float>) {
    _mm256_storeu_ps(p, v);
#ifdef __F16C__
  } else if constexpr (std::is_same_v<V, c10::Half>) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
#endif
  } else {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i bias = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)),
                                          _mm256_set1_epi32(0x7FFF));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    rounded = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), nan);
    // 8 values of 16 bits: packus works within 128-bit lanes, so the lanes' halves are put back in order after.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
}

// The 8x8 tile whose rows start at src + i * stride, as floats transposed in registers: t[i] holds its column i.
template <typename S>
inline void load_transposed_tile(const S* src, int64_t stride, __m256* t) {
  for (int i = 0; i < 8; ++i) t[i] = load8_float(src + i * stride);
  transpose8x8(t);
}
#endif

// dst[c * dst_stride + r] = src[r * src_stride + c], rounded to D: the transpose of a rows x cols matrix whose rows
// are src_stride apart (cols when 0), into rows dst_stride apart (rows when 0). For float and the 16-bit types
// (kTileType), 8x8 tiles go through AVX2 float registers (8 loads, 24 shuffles, 8 stores per 64 values) instead of 64
// scalar strided stores, float's columns right of the whole tiles included (P2, 512 NCHW 14x14 crops, fwd+bwd: 20.8
// -> 19.6 ms on 2 cores); the values are the same either way, the 16-bit types' rounded as their scalar casts round
// them. The NCHW forwards' interleave and stores of the 16-bit types went value by value before: on 2 Xeon (Emerald
// Rapids) cores under mimalloc, crop_and_resize P2 512 x 14x14 bfloat16 17.5 -> 7.4 ms, float16 12.7 -> 6.0 ms; 128 x
// 28x28 14.8 -> 5.9, 10.3 -> 4.6 ms; 32 P3 maps 1.89 -> 0.99, 1.89 -> 0.95 ms; roi_align P2 512 x 7x7 bfloat16 25.3
// -> 10.9 ms. Short rows (at most kShortRows: crop_and_resize's 16 planes copied interleaved) take the tiles column
// by column, so that each line of dst is written whole at once; row by row, each pass over a plane-sized dst would
// write half of every line and the next pass read it back to write the other half. Longer rows keep the row order,
// which reads 8 source rows at a time: the rotated operator's 64-channel windows read 64 at a time column by column
// and were slower for it.
constexpr int64_t kShortRows = 16;
template <typename S, typename D>
void transpose_matrix(const S* src, int64_t rows, int64_t cols, D* dst, int64_t src_stride = 0,
                      int64_t dst_stride = 0) {
  if (src_stride == 0) src_stride = cols;
  if (dst_stride == 0) dst_stride = rows;
  int64_t r_tiled = 0, c_tiled = 0;  // rows and columns covered by the tiles
#ifdef __AVX2__
  if constexpr (kTileType<S> && kTileType<D>) {
    r_tiled = rows / 8 * 8;
    c_tiled = cols / 8 * 8;
    auto tile = [&](int64_t r0, int64_t c0) {
      __m256 t[8];
      load_transposed_tile(src + r0 * src_stride + c0, src_stride, t);
      for (int i = 0; i < 8; ++i) store8_float(dst + (c0 + i) * dst_stride + r0, t[i]);
    };
    if (rows <= kShortRows) {
      for (int64_t c0 = 0; c0 < c_tiled; c0 += 8) {
        for (int64_t r0 = 0; r0 < r_tiled; r0 += 8) tile(r0, c0);
      }
    } else {
      for (int64_t r0 = 0; r0 < r_tiled; r0 += 8) {
        for (int64_t c0 = 0; c0 < c_tiled; c0 += 8) tile(r0, c0);
      }
    }
    // The last columns of the tiled rows, fewer than 8 (a 14-wide crop row: 6 of 14), as one more tile per 8 rows
    // whose loads are masked to them (the masked lanes read nothing) and whose first `rest` rows are stored; float
    // only (a masked load reads 32-bit lanes), the 16-bit types' go to the scalar loop below.
    if constexpr (std::is_same_v<S, float>) {
      if (c_tiled < cols && r_tiled > 0) {
        const int64_t rest = cols - c_tiled;
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rest)),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int64_t r0 = 0; r0 < r_tiled; r0 += 8) {
          __m256 t[8];
          for (int i = 0; i < 8; ++i) t[i] = _mm256_maskload_ps(src + (r0 + i) * src_stride + c_tiled, mask);
          transpose8x8(t);
          for (int64_t i = 0; i < rest; ++i) store8_float(dst + (c_tiled + i) * dst_stride + r0, t[i]);
        }
        c_tiled = cols;
      }
    }
  }
#endif
  // What the tiles left: the columns right of them in the tiled rows, then the rows below them.
  if (c_tiled < cols) {
    for (int64_t r = 0; r < r_tiled; ++r) {
      for (int64_t c = c_tiled; c < cols; ++c) dst[c * dst_stride + r] = static_cast<D>(src[r * src_stride + c]);
    }
  }
  for (int64_t r = r_tiled; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[c * dst_stride + r] = static_cast<D>(src[r * src_stride + c]);
  }
}

// cb planes of plane_size values (planes[j * plane_size + p]) copied interleaved, in T: out[p * cb + j].
template <typename scalar_t, typename T>
void interleave_planes(const scalar_t* planes, int64_t cb, int64_t plane_size, T* out) {
  transpose_matrix(planes, cb, plane_size, out);
}

// The inverse of interleave_planes: in[p * cb + j] (T) rounded into cb planes, out[j * plane_size + p].
template <typename T, typename scalar_t>
void deinterleave_planes(const T* in, int64_t cb, int64_t plane_size, scalar_t* out) {
  transpose_matrix(in, plane_size, cb, out);
}

#ifdef __AVX512F__
// Whether stream_tiles16 can write slice_c planes at out0, plane_stride apart: 16 channels a tile, and every plane
// starting on a cache line, so that a tile's 16 values of a plane are one whole line.
inline bool planes_in_lines16(int64_t slice_c, int64_t plane_stride, const float* out0) {
  return slice_c % 16 == 0 && plane_stride % 16 == 0 && reinterpret_cast<uintptr_t>(out0) % 64 == 0;
}

// The 16x16 tile of a float accumulator [pixels, slice_c] whose first pixel's channel c is at acc, transposed in
// registers: t[j] holds channel c + j of the tile's 16 pixels, pixel i loaded where bit i of `bits` is set and 0
// where it is not.
inline void load_tile16(const float* acc, int64_t slice_c, uint32_t bits, __m512 t[16]) {
  for (int i = 0; i < 16; ++i) t[i] = bits >> i & 1 ? _mm512_loadu_ps(acc + i * slice_c) : _mm512_setzero_ps();
  if (bits != 0) transpose16x16(t);
}

// Tiles [t0, t1) of a float accumulator [pixels, slice_c] written as slice_c planes of `pixels` values, plane j at
// out0 + j * plane_stride (planes_in_lines16): 16 pixels x 16 channels at a time transposed in registers
// (transpose16x16), and each plane's 16 values streamed as one whole line, with no copy in cache, or, `cached`, stored
// as one by a cached store (an output whose pages are fresh from the OS, zeroed in cache by their first touch:
// pages_are_fresh); a last tile of fewer than 16 pixels is stored masked (the rest of its line belongs to the rows
// after them), and nothing past `pixels` is read. Pixel tile * 16 + i is read where bit i of held(tile) is set and
// written 0 where it is not (a gradient's pixels that no box reads: never zeroed in the accumulator).
template <typename Held>
void stream_tiles16(const float* acc, int64_t pixels, int64_t slice_c, int64_t plane_stride, float* out0, int64_t t0,
                    int64_t t1, bool cached, const Held& held) {
  for (int64_t c = 0; c < slice_c; c += 16) {
    for (int64_t tile = t0; tile < t1; ++tile) {
      const int64_t in_tile = std::min<int64_t>(16, pixels - tile * 16);
      const uint32_t bits = held(tile) & static_cast<uint32_t>((uint64_t{1} << in_tile) - 1);  // nothing past pixels
      __m512 t[16];
      load_tile16(acc + tile * 16 * slice_c + c, slice_c, bits, t);
      float* o = out0 + c * plane_stride + tile * 16;
      if (in_tile == 16 && cached) {
        for (int j = 0; j < 16; ++j) _mm512_store_ps(o + j * plane_stride, t[j]);
      } else if (in_tile == 16) {
        for (int j = 0; j < 16; ++j) _mm512_stream_ps(o + j * plane_stride, t[j]);
      } else {
        const auto mask = static_cast<__mmask16>((1u << in_tile) - 1);
        for (int j = 0; j < 16; ++j) _mm512_mask_storeu_ps(o + j * plane_stride, mask, t[j]);
      }
    }
  }
}
#endif

// store_channels_last's accumulator rounded into slice_c planes of an NCHW output instead, plane j's
// run of plane_size values at out0 + j * plane_stride, streamed (the output is written once and not read again by
// the call): transposed in cache into `planes` [slice_c, plane_size], then each run streamed in order, line after
// line (one run when the planes are contiguous, lines shared by two planes included). Streaming 8x8 tiles straight
// from registers instead (8 runs written a half line at a time) measured faster on 2 Zen 4 cores (P2 512 x 14x14
// fwd+bwd 22.5 -> 21.5 ms) but slower on 2 Xeon (Emerald Rapids) cores, by more: P2 fwd+bwd, the image gradient's
// bands, alternated in one process under mimalloc, 128 x 28x28 44.0 / 54.9 -> 34.0 / 40.9 ms, 512 x 14x14
// 48.6 / 47.2 -> 38.4 / 37.0 ms (two processes). With AVX-512, float planes that start on cache lines take 16x16
// tiles from registers instead, each store a whole line (stream_tiles16): the image gradients' bands (this and
// store_read_planes), on 2 Xeon (Emerald Rapids) cores under mimalloc, two builds alternated in one process, 7 rounds,
// outputs bit-equal: crop_and_resize NCHW image gradient P2 512 x 14x14 13.4 -> 10.1 ms, 128 x 28x28 11.0 -> 8.6 ms;
// roi_align's P2 512 x 7x7 9.3 -> 8.4 ms, 128 x 14x14 9.5 -> 8.8 ms.
template <typename scalar_t>
void stream_planes(const scalar_t* planes, int64_t plane_size, int64_t slice_c, int64_t plane_stride,
                   scalar_t* out0) {
  if (plane_stride == plane_size) {
    stream_copy(planes, out0, slice_c * plane_size);
    return;
  }
  for (int64_t j = 0; j < slice_c; ++j) stream_copy(planes + j * plane_size, out0 + j * plane_stride, plane_size);
}

// `cached`: out0's pages are fresh from the OS (pages_are_fresh), and the AVX-512 tiles are stored through the cache.
template <typename scalar_t, typename T>
void store_planes(const T* acc, int64_t plane_size, int64_t slice_c, int64_t plane_stride, scalar_t* planes,
                  scalar_t* out0, bool cached) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float> && std::is_same_v<scalar_t, float>) {
    if (planes_in_lines16(slice_c, plane_stride, out0)) {
      stream_tiles16(acc, plane_size, slice_c, plane_stride, out0, 0, (plane_size + 15) / 16, cached,
                     [](int64_t) { return 0xFFFFu; });
      return;
    }
  }
#endif
  transpose_matrix(acc, plane_size, slice_c, planes);
  stream_planes(planes, plane_size, slice_c, plane_stride, out0);
}

// A per-task buffer of n values, left uninitialized: std::vector would value-initialize it, a zero fill that the
// task's own writes make useless (a block of 16 interleaved P2 planes, 3.9 MB a thread, every call). For buffers whose
// values are each written before they are read.
template <typename T>
std::unique_ptr<T[]> uninitialized_buffer(int64_t n) {
  return std::unique_ptr<T[]>(new T[n]);
}

// at::parallel_for grain: about 32768 scalar steps per task (ATen's own GRAIN_SIZE), so that small calls stay on
// one thread and large ones split into tasks big enough to amortize the dispatch.
inline int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kGrain = 32768;
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, work_per_item));
}

// Asks Linux to back a freshly allocated, not yet touched tensor with transparent huge pages (THP "madvise" mode,
// as on this machine), so that its first touch takes one page fault per 2 MB instead of one per 4 KB. PyTorch's
// CPU allocator does the same for every allocation only under THP_MEM_ALLOC_ENABLE=1. The first touch of a fresh
// 100 MB output (the P2 14x14 crop_and_resize forward) is otherwise a large share of the kernel's time. Only whole
// 2 MB pages inside the tensor are advised; the advice is a hint, so its failure (another kernel, THP off)
// changes nothing but the speed.
inline void advise_huge_pages(const at::Tensor& t) {
#ifdef __linux__
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t lo = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t hi = (begin + t.nbytes()) & ~(kHugePage - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// Whether a freshly allocated tensor's pages are not in memory yet: the allocator has just mapped them from the OS
// (glibc's malloc maps every allocation above its mmap threshold anew and unmaps it on free), so its first touch
// faults them in and the kernel zeroes them, through the cache. Asked of the page in the middle of the tensor (the
// first one may hold the allocator's header); false where Linux cannot say. A kernel writing such an output in
// order then finds each line it stores in cache, zeroed, and cached stores beat streamed ones, which write the line
// to memory a second time.
inline bool pages_are_fresh(const at::Tensor& t) {
#ifdef __linux__
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  if (t.nbytes() < 2 * page) return false;
  const uintptr_t middle = reinterpret_cast<uintptr_t>(t.data_ptr()) + t.nbytes() / 2;
  unsigned char resident = 1;
  if (mincore(reinterpret_cast<void*>(middle & ~(page - 1)), 1, &resident) != 0) return false;
  return (resident & 1) == 0;
#else
  (void)t;
  return false;
#endif
}

}  // namespace impls
