// crop_and_resize on the CPU: TensorFlow's sampling rule (csrc/bilinear.h), mirroring impls/backends/reference.py.
//
// The per-row and per-column sample data (pixel pair, lerp, in-range flag) depend only on the box, so they are
// computed once per box into tables (CropAxis) and reused for every channel. The sampling loops run channels
// last, over kChunk (64) channels at a time (ChannelsLastSlice): each tap is then a contiguous, vectorized run of
// 64 values instead of 64 strided scalar loads from NCHW planes. (Timings: bench/results.)
// Forward: per channel slice, split over boxes; a box's crop is built channels last in a per-thread buffer and
// transposed into out[k] ([C, cells]). Image rows are interpolated horizontally once per box (LerpRowCache).
// Image gradient: split over (image, channel slice); each walks the boxes of its image in increasing k, so
// every element receives its contributions in the reference's order (box, cell, corner): deterministic,
// independent of the thread count, and no two threads write the same element.
// Box gradient: per channel slice, split over boxes; each box sums channel, cell in the reference's order.
// Float64 equals impls/backends/reference.py bit for bit: same expressions, same order, no FP contraction (setup.py).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#include "../bilinear.h"
#include "../checks.h"
#include "cpu_common.h"

namespace impls {
namespace {

// One row (or column) of a crop: everything the kernels need about sample i of one box side.
template <typename T>
struct CropAxis {
  bool valid;       // inside [0, size - 1]; else the sample is extrapolation_value
  int64_t lo;       // floor: top / left pixel
  int64_t hi;       // ceil: bottom / right pixel
  int64_t nearest;  // round half away from zero
  T lerp;
  T d_lo;  // d coordinate / d box side start (y1 or x1)
  T d_hi;  // d coordinate / d box side end (y2 or x2)
};

// tables[k * crop + i] for box side [lo_col, hi_col] of every box.
template <typename scalar_t, typename T>
std::vector<CropAxis<T>> crop_axis_tables(const scalar_t* boxes, int64_t num_boxes, int lo_col, int hi_col,
                                          int64_t crop, int64_t size) {
  std::vector<CropAxis<T>> table(num_boxes * crop);
  for (int64_t k = 0; k < num_boxes; ++k) {
    const T lo = static_cast<T>(boxes[k * 4 + lo_col]);
    const T hi = static_cast<T>(boxes[k * 4 + hi_col]);
    for (int64_t i = 0; i < crop; ++i) {
      CropAxis<T>& a = table[k * crop + i];
      const T v = crop_coordinate<T>(lo, hi, i, crop, size);
      a.valid = !crop_out_of_range(v, size);
      if (!a.valid) continue;  // a NaN or far-away coordinate never reaches floor/int conversion
      const CropTap<T> tap = crop_tap(v);
      a.lo = tap.lo;
      a.hi = tap.hi;
      a.lerp = tap.lerp;
      a.nearest = round_half_away(v);
      crop_coordinate_grads<T>(i, crop, size, a.d_lo, a.d_hi);
    }
  }
  return table;
}

// Channels sampled together, channels last: an image is read as kChunk-channel slices [N, H, W, kChunk], so that
// every tap of a sample is one contiguous, vectorizable run of kChunk values (TensorFlow's NHWC advantage). An
// NCHW image is converted one slice at a time instead of whole: a 1x256x200x304 float32 map is 4 slices of
// 15.6 MB, under glibc's 32 MB mmap ceiling, so the slice buffer's pages are reused from call to call, where a
// whole-map copy into a fresh 62 MB tensor would page-fault on every call. A channels_last image is read in
// place. 64 float32 = 256 bytes: whole cache lines per tap.
constexpr int64_t kChunk = 64;
// Channels per pass over the boxes when a channels_last image is read in place: two cached interpolated rows of a
// 28-wide crop then take 2 x 28 x 512 x 4 B = 112 KB (float32), within L2.
constexpr int64_t kInPlaceChunk = 512;

// Pixels per block when transposing between NCHW planes and a channels-last slice: each of the kChunk planes is
// accessed in runs of 128 values, long enough for the hardware prefetcher, against a 32 KB float32 block of the
// slice (in L1/L2). Runs of 16 (one cache line from each of 64 planes) leave every line a demand miss.
constexpr int64_t kPixels = 128;

// Channels [c0, c0 + slice_c) of an image, channels last: pixel p of image n at image(n) + p * stride.
template <typename scalar_t>
class ChannelsLastSlice {
 public:
  // image: contiguous NCHW or channels_last (checked); a channels_last one is read in place.
  explicit ChannelsLastSlice(const at::Tensor& image)
      : N_(image.size(0)), C_(image.size(1)), HW_(image.size(2) * image.size(3)),
        in_place_(image.is_contiguous(at::MemoryFormat::ChannelsLast)), src_(image.const_data_ptr<scalar_t>()) {
    TORCH_CHECK(in_place_ || image.is_contiguous(), "crop_and_resize: image slices need NCHW or NHWC");
    if (!in_place_) buf_.resize(N_ * HW_ * std::min(kChunk, C_));
  }

  void load(int64_t c0, int64_t slice_c) {
    if (in_place_) {
      data_ = src_ + c0;
      stride_ = C_;
      return;
    }
    stride_ = slice_c;
    data_ = buf_.data();
    // Transposed kPixels pixels at a time (see kPixels).
    const int64_t blocks = (HW_ + kPixels - 1) / kPixels;
    at::parallel_for(0, N_ * blocks, grain_for(kPixels * slice_c), [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / blocks, p0 = item % blocks * kPixels;
        const int64_t pn = std::min(kPixels, HW_ - p0);
        const scalar_t* src = src_ + (n * C_ + c0) * HW_ + p0;
        scalar_t* dst = buf_.data() + (n * HW_ + p0) * slice_c;
        for (int64_t c = 0; c < slice_c; ++c) {
          for (int64_t p = 0; p < pn; ++p) dst[p * slice_c + c] = src[c * HW_ + p];
        }
      }
    });
  }

  const scalar_t* image(int64_t n) const { return data_ + n * HW_ * stride_; }
  int64_t stride() const { return stride_; }

 private:
  int64_t N_, C_, HW_;
  bool in_place_;
  const scalar_t* src_;
  std::vector<scalar_t> buf_;
  const scalar_t* data_ = nullptr;
  int64_t stride_ = 0;
};

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

// A crop [cells, slice_c] (channels last, in buf) stored as out[k][c][cell] for each of its slice_c channels,
// kChannelBlock channels at a time, so reads are contiguous and writes kChannelBlock sequential streams of whole
// cache lines (a channel's cells are 784 contiguous bytes for 14x14 float32).
template <typename scalar_t>
void store_crop(const scalar_t* buf, int64_t cells, int64_t slice_c, scalar_t* dst) {
  for (int64_t c0 = 0; c0 < slice_c; c0 += kChannelBlock) {
    const int64_t cb = std::min<int64_t>(kChannelBlock, slice_c - c0);
    if (cb == kChannelBlock) {
      for (int64_t cell = 0; cell < cells; ++cell) {
        const scalar_t* src = buf + cell * slice_c + c0;
        for (int64_t j = 0; j < kChannelBlock; ++j) dst[(c0 + j) * cells + cell] = src[j];
      }
    } else {
      for (int64_t j = 0; j < cb; ++j) {
        for (int64_t cell = 0; cell < cells; ++cell) dst[(c0 + j) * cells + cell] = buf[cell * slice_c + c0 + j];
      }
    }
  }
}

// One crop, channels [c0, c0 + slice_c), channels last: cell (py, px) into dst + (py * crop_width + px) * step,
// slice_c contiguous values. dst is a per-thread buffer (step = slice_c) for an NCHW output, or the output itself
// (&out[k][c0][0][0], step = C) for a channels_last one.
template <typename scalar_t, typename T>
void crop_forward_box(const CropAxis<T>* yk, const CropAxis<T>* xk, int64_t crop_height, int64_t crop_width,
                      bool nearest, scalar_t ext, const scalar_t* im, int64_t W, int64_t stride, int64_t slice_c,
                      LerpRowCache<T>& cache, scalar_t* dst, int64_t step) {
  cache.tag[0] = cache.tag[1] = -1;  // the cached rows belong to another box's columns
  auto fill = [&](int64_t r, T* h) { lerp_image_row(xk, crop_width, im + r * W * stride, stride, slice_c, h); };
  for (int64_t py = 0; py < crop_height; ++py) {
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
      const int st = cache.get(y.lo, -1, fill);
      const int sb = cache.get(y.hi, st, fill);
      const T* top = cache.rows[st].data();
      const T* bottom = cache.rows[sb].data();
      const T yl = y.lerp;
      for (int64_t px = 0; px < crop_width; ++px) {
        scalar_t* bp = row + px * step;
        if (!xk[px].valid) {
          std::fill(bp, bp + slice_c, ext);
          continue;
        }
        const T* t = top + px * slice_c;
        const T* b = bottom + px * slice_c;
        for (int64_t c = 0; c < slice_c; ++c) bp[c] = static_cast<scalar_t>(t[c] + (b[c] - t[c]) * yl);
      }
    }
  }
}

// The sample tables of every box: ys[k * crop_height + py], xs[k * crop_width + px].
template <typename scalar_t, typename T>
struct CropTables {
  std::vector<CropAxis<T>> ys;
  std::vector<CropAxis<T>> xs;

  CropTables(const scalar_t* boxes, int64_t K, int64_t crop_height, int64_t crop_width, int64_t H, int64_t W)
      : ys(crop_axis_tables<scalar_t, T>(boxes, K, 0, 2, crop_height, H)),
        xs(crop_axis_tables<scalar_t, T>(boxes, K, 1, 3, crop_width, W)) {}
};

at::Tensor crop_and_resize_forward_cpu(const at::Tensor& image_, const at::Tensor& boxes_,
                                       const at::Tensor& box_index_, int64_t crop_height, int64_t crop_width,
                                       c10::string_view method, double extrapolation_value) {
  check_crop_and_resize(image_, "image", boxes_, box_index_, crop_height, crop_width, method, c10::DeviceType::CPU);
  // A channels_last image gives a channels_last output, as conv2d does, written in place with no transpose; a
  // strided image (neither NCHW nor channels_last) is copied once to NCHW, one pass over N*C*H*W.
  const bool channels_last = image_.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  const at::Tensor image = image_.contiguous(image_.suggest_memory_format());
  const at::Tensor boxes = boxes_.contiguous();
  const at::Tensor box_index = box_index_.contiguous();
  const int64_t N = image.size(0), C = image.size(1), H = image.size(2), W = image.size(3);
  const int64_t K = boxes.size(0);
  check_box_index(box_index.const_data_ptr<int64_t>(), K, N);
  at::Tensor out = at::empty({K, C, crop_height, crop_width}, image.options().memory_format(
                                                                   image_.suggest_memory_format()));
  if (out.numel() == 0) return out;
  advise_huge_pages(out);
  const bool nearest = method == "nearest";

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "crop_and_resize_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const int64_t* idx = box_index.const_data_ptr<int64_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const CropTables<scalar_t, T> tab(boxes.const_data_ptr<scalar_t>(), K, crop_height, crop_width, H, W);
    const scalar_t ext = static_cast<scalar_t>(extrapolation_value);
    const int64_t cells = crop_height * crop_width;
    ChannelsLastSlice<scalar_t> slice(image);

    // An NCHW image is converted kChunk channels at a time; a channels_last one is read in place, all channels
    // of a tap at once (up to kInPlaceChunk): longer vector runs and one pass over the boxes instead of C / 64.
    const int64_t chunk = channels_last ? std::min(C, kInPlaceChunk) : kChunk;
    for (int64_t c0 = 0; c0 < C; c0 += chunk) {
      const int64_t slice_c = std::min(chunk, C - c0);
      slice.load(c0, slice_c);
      at::parallel_for(0, K, grain_for(cells * slice_c), [&](int64_t begin, int64_t end) {
        LerpRowCache<T> cache;
        for (auto& r : cache.rows) r.resize(crop_width * slice_c);
        // One crop, channels last, for an NCHW output: 200 KB for 28x28 x 64 float32.
        std::vector<scalar_t> buf(channels_last ? 0 : cells * slice_c);
        for (int64_t k = begin; k < end; ++k) {
          const CropAxis<T>* yk = tab.ys.data() + k * crop_height;
          const CropAxis<T>* xk = tab.xs.data() + k * crop_width;
          const scalar_t* im = slice.image(idx[k]);
          if (channels_last) {
            crop_forward_box(yk, xk, crop_height, crop_width, nearest, ext, im, W, slice.stride(), slice_c, cache,
                             o + k * cells * C + c0, C);
          } else {
            crop_forward_box(yk, xk, crop_height, crop_width, nearest, ext, im, W, slice.stride(), slice_c, cache,
                             buf.data(), slice_c);
            store_crop(buf.data(), cells, slice_c, o + (k * C + c0) * cells);
          }
        }
      });
    }
  });
  return out;
}

// Image gradient of one box into a [H * W, slice_c] channels-last accumulator, from its gradient
// gt [cells, slice_c], in the reference's order (cell, then corner). Each corner is its own loop over the channels:
// two corners on the same pixel (an integer coordinate) then add in the reference's order, and the vectorizer has
// no aliasing to rule out.
// Cell (py, px)'s slice_c gradient values are at gt + cell * gt_step (G: the gradient's own type, or T after a
// transposition); pixel p's accumulators at acc + p * acc_step.
template <typename G, typename T>
void crop_image_grad_box(const CropAxis<T>* yk, const CropAxis<T>* xk, int64_t crop_height, int64_t crop_width,
                         bool nearest, const G* gt, int64_t gt_step, int64_t slice_c, int64_t W, T* acc,
                         int64_t acc_step) {
  for (int64_t py = 0; py < crop_height; ++py) {
    const CropAxis<T>& y = yk[py];
    if (!y.valid) continue;
    for (int64_t px = 0; px < crop_width; ++px) {
      const CropAxis<T>& x = xk[px];
      if (!x.valid) continue;
      const G* gv = gt + (py * crop_width + px) * gt_step;
      if (nearest) {
        T* a = acc + (y.nearest * W + x.nearest) * acc_step;
        for (int64_t c = 0; c < slice_c; ++c) a[c] += static_cast<T>(gv[c]);
        continue;
      }
      const T yl = y.lerp, xl = x.lerp;
      T* tl = acc + (y.lo * W + x.lo) * acc_step;
      T* tr = acc + (y.lo * W + x.hi) * acc_step;
      T* bl = acc + (y.hi * W + x.lo) * acc_step;
      T* br = acc + (y.hi * W + x.hi) * acc_step;
      for (int64_t c = 0; c < slice_c; ++c) tl[c] += (1 - xl) * ((1 - yl) * static_cast<T>(gv[c]));
      for (int64_t c = 0; c < slice_c; ++c) tr[c] += xl * ((1 - yl) * static_cast<T>(gv[c]));
      for (int64_t c = 0; c < slice_c; ++c) bl[c] += (1 - xl) * (yl * static_cast<T>(gv[c]));
      for (int64_t c = 0; c < slice_c; ++c) br[c] += xl * (yl * static_cast<T>(gv[c]));
    }
  }
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
        fyp[c] = (1 - xl) * (bl - tl) + xl * (br - tr);
        fxp[c] = (1 - yl) * (tr - tl) + yl * (br - bl);
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
// strides), and the boxes of each image in increasing k (order[start[n] .. start[n + 1])).
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
};

// Box k's incoming gradient, channels [c0, c0 + slice_c) at gk, transposed into gt [cells, slice_c]: read channel by
// channel, in the gradient's own order (a box's channels are contiguous runs).
template <typename scalar_t, typename T>
void transpose_box_grad(const ImageGradCall<scalar_t, T>& call, const scalar_t* gk, int64_t slice_c, T* gt) {
  for (int64_t c = 0; c < slice_c; ++c) {
    for (int64_t py = 0; py < call.crop_height; ++py) {
      const scalar_t* gr = gk + c * call.gs_c + py * call.gs_y;
      T* dst = gt + py * call.crop_width * slice_c + c;
      for (int64_t px = 0; px < call.crop_width; ++px) dst[px * slice_c] = static_cast<T>(gr[px * call.gs_x]);
    }
  }
}

// The image gradient of image n, channels [c0, c0 + slice_c): its boxes in increasing k, each added into acc
// (pixel p's channels at acc + p * acc_step). gt: room for one box's transposed gradient, unless read in place.
template <typename scalar_t, typename T>
void accumulate_image(const ImageGradCall<scalar_t, T>& call, int64_t n, int64_t c0, int64_t slice_c, T* gt, T* acc,
                      int64_t acc_step) {
  for (int64_t j = call.start[n]; j < call.start[n + 1]; ++j) {
    const int64_t k = call.order[j];
    const CropAxis<T>* yk = call.tab.ys.data() + k * call.crop_height;
    const CropAxis<T>* xk = call.tab.xs.data() + k * call.crop_width;
    const scalar_t* gk = call.g + k * call.gs_k + c0 * call.gs_c;
    if (call.grad_in_place) {
      crop_image_grad_box(yk, xk, call.crop_height, call.crop_width, call.nearest, gk, call.C, slice_c, call.W, acc,
                          acc_step);
      continue;
    }
    transpose_box_grad(call, gk, slice_c, gt);
    crop_image_grad_box(yk, xk, call.crop_height, call.crop_width, call.nearest, gt, slice_c, slice_c, call.W, acc,
                        acc_step);
  }
}

// A channels-last accumulator [plane_size, slice_c] rounded into slice_c of a channels_last output's C channels.
template <typename scalar_t, typename T>
void store_channels_last(const T* acc, int64_t plane_size, int64_t slice_c, int64_t C, scalar_t* out0) {
  for (int64_t p = 0; p < plane_size; ++p) {
    const T* src = acc + p * slice_c;
    scalar_t* dst = out0 + p * C;
    for (int64_t c = 0; c < slice_c; ++c) dst[c] = static_cast<scalar_t>(src[c]);
  }
}

// A channels-last accumulator [plane_size, slice_c] rounded and transposed into slice_c NCHW planes, kPixels pixels
// at a time, so that the accumulator block, read slice_c times, stays in L1 (a whole-plane pass per channel would
// re-read the whole accumulator once per channel).
template <typename scalar_t, typename T>
void store_nchw(const T* acc, int64_t plane_size, int64_t slice_c, scalar_t* out0) {
  for (int64_t p0 = 0; p0 < plane_size; p0 += kPixels) {
    const int64_t pn = std::min(kPixels, plane_size - p0);
    for (int64_t c = 0; c < slice_c; ++c) {
      scalar_t* dst = out0 + c * plane_size + p0;
      const T* src = acc + p0 * slice_c + c;
      for (int64_t p = 0; p < pn; ++p) dst[p] = static_cast<scalar_t>(src[p * slice_c]);
    }
  }
}

// Channels per task of the image gradient: at most kChunk (kInPlaceChunk for a channels_last output), narrower when
// there would be fewer tasks than threads (C = 64 on one image would otherwise be one task), at least kChannelBlock.
// An element's order of contributions does not depend on it.
inline int64_t image_grad_chunk(int64_t N, int64_t C, bool channels_last) {
  const int64_t tasks_per_image = (at::get_num_threads() + N - 1) / N;
  const int64_t per_task = (C + tasks_per_image - 1) / tasks_per_image;
  return std::clamp<int64_t>((per_task + kChannelBlock - 1) / kChannelBlock * kChannelBlock, kChannelBlock,
                             channels_last ? kInPlaceChunk : kChunk);
}

// One task: image n, channels [c0, c0 + slice_c) of grad_image gi. A channels_last float/double output is its own
// accumulator (zeroed before the tasks); otherwise the task accumulates into scratch, in T, and writes it out,
// rounded once (half types), channels_last or transposed to NCHW.
template <typename scalar_t, typename T>
void image_grad_task(const ImageGradCall<scalar_t, T>& call, int64_t n, int64_t c0, int64_t slice_c, bool in_place,
                     bool channels_last, T* scratch, T* gt, scalar_t* gi) {
  const int64_t plane_size = call.plane_size, C = call.C;
  if (in_place) {
    accumulate_image(call, n, c0, slice_c, gt, reinterpret_cast<T*>(gi + n * plane_size * C + c0), C);
    return;
  }
  std::fill(scratch, scratch + plane_size * slice_c, T(0));
  accumulate_image(call, n, c0, slice_c, gt, scratch, slice_c);
  if (channels_last) {
    store_channels_last(scratch, plane_size, slice_c, C, gi + n * plane_size * C + c0);
  } else {
    store_nchw(scratch, plane_size, slice_c, gi + (n * C + c0) * plane_size);
  }
}

// Split over (image, channel slice): each task accumulates its channels of its image channels last, in T
// (half/bfloat16 in float, as the reference does in double, rounded once), walking the image's boxes in increasing
// k, then writes them out: deterministic, independent of the thread count, and no two threads write the same
// element.
template <typename scalar_t, typename T>
void image_grad_tasks(const ImageGradCall<scalar_t, T>& call, int64_t N, int64_t K, bool channels_last,
                      at::Tensor& grad_image) {
  const int64_t C = call.C, cells = call.crop_height * call.crop_width;
  const bool in_place = channels_last && std::is_same_v<scalar_t, T>;
  if (in_place) grad_image.zero_();
  scalar_t* gi = grad_image.mutable_data_ptr<scalar_t>();
  const int64_t chunk = image_grad_chunk(N, C, channels_last);
  const int64_t chunks = (C + chunk - 1) / chunk;
  const int64_t work = K / std::max<int64_t>(N, 1) * cells * chunk;
  at::parallel_for(0, N * chunks, grain_for(work), [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(in_place ? 0 : call.plane_size * std::min(chunk, C));
    std::vector<T> gt(call.grad_in_place ? 0 : cells * std::min(chunk, C));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / chunks, c0 = item % chunks * chunk;
      image_grad_task(call, n, c0, std::min(chunk, C - c0), in_place, channels_last, scratch.data(), gt.data(), gi);
    }
  });
}

at::Tensor crop_and_resize_backward_input_cpu(const at::Tensor& grad, const at::Tensor& boxes_,
                                              const at::Tensor& box_index_, int64_t crop_height, int64_t crop_width,
                                              int64_t N, int64_t C, int64_t H, int64_t W, c10::string_view method) {
  check_crop_and_resize(grad, "grad", boxes_, box_index_, crop_height, crop_width, method, c10::DeviceType::CPU);
  check_grad(grad, boxes_.size(0), C, crop_height, crop_width);
  check_input_sizes(N, C, H, W);
  const at::Tensor boxes = boxes_.contiguous();
  const at::Tensor box_index = box_index_.contiguous();
  const int64_t K = boxes.size(0);
  check_box_index(box_index.const_data_ptr<int64_t>(), K, N);
  // The image gradient takes the incoming gradient's layout: channels_last in a channels_last network.
  const bool channels_last = grad.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  at::Tensor grad_image = at::empty({N, C, H, W}, grad.options().memory_format(grad.suggest_memory_format()));
  if (K == 0 || C == 0 || H * W == 0) return grad_image.zero_();
  advise_huge_pages(grad_image);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "crop_and_resize_backward_input_cpu",
                                  [&] {
    using T = at::opmath_type<scalar_t>;
    const CropTables<scalar_t, T> tab(boxes.const_data_ptr<scalar_t>(), K, crop_height, crop_width, H, W);
    std::vector<int64_t> order, start;
    boxes_by_image(box_index.const_data_ptr<int64_t>(), K, N, order, start);
    // The incoming gradient is read through its strides: autograd often hands an expanded one (the gradient of
    // out.sum() is a 0-stride ones), whose .contiguous() copy would be a fresh [K, C, ch, cw] tensor, written and
    // read once more than the gradient computation itself needs.
    const ImageGradCall<scalar_t, T> call{tab, grad.const_data_ptr<scalar_t>(), grad.stride(0), grad.stride(1),
                                          grad.stride(2), grad.stride(3), crop_height, crop_width, C, W, H * W,
                                          method == "nearest",
                                          channels_last && grad.is_contiguous(at::MemoryFormat::ChannelsLast),
                                          order, start};
    image_grad_tasks(call, N, K, channels_last, grad_image);
  });
  return grad_image;
}

at::Tensor crop_and_resize_backward_boxes_cpu(const at::Tensor& grad, const at::Tensor& image_,
                                              const at::Tensor& boxes_, const at::Tensor& box_index_,
                                              int64_t crop_height, int64_t crop_width, c10::string_view method) {
  check_crop_and_resize(image_, "image", boxes_, box_index_, crop_height, crop_width, method, c10::DeviceType::CPU);
  check_same(grad, image_, "grad", "image");
  check_grad(grad, boxes_.size(0), image_.size(1), crop_height, crop_width);
  const at::Tensor boxes = boxes_.contiguous();
  const at::Tensor box_index = box_index_.contiguous();
  const int64_t N = image_.size(0), C = image_.size(1), H = image_.size(2), W = image_.size(3);
  const int64_t K = boxes.size(0);
  check_box_index(box_index.const_data_ptr<int64_t>(), K, N);
  at::Tensor grad_boxes = at::zeros({K, 4}, boxes.options());
  // Nearest sampling has zero derivative with respect to the box almost everywhere: grad_boxes stays 0.
  if (method == "nearest" || K == 0 || C == 0) return grad_boxes;
  // As in the forward: a strided image is copied once to NCHW.
  const at::Tensor image = image_.is_contiguous(at::MemoryFormat::ChannelsLast) ? image_ : image_.contiguous();
  const int64_t gs_k = grad.stride(0), gs_c = grad.stride(1), gs_y = grad.stride(2), gs_x = grad.stride(3);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "crop_and_resize_backward_boxes_cpu",
                                  [&] {
    using T = at::opmath_type<scalar_t>;
    const int64_t* idx = box_index.const_data_ptr<int64_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const CropTables<scalar_t, T> tab(boxes.const_data_ptr<scalar_t>(), K, crop_height, crop_width, H, W);
    const int64_t cells = crop_height * crop_width;
    // Split over boxes; channel slices in increasing order keep each box's sum in the reference's order.
    std::vector<std::array<T, 4>> sums(K, {T(0), T(0), T(0), T(0)});  // d y1, d x1, d y2, d x2
    ChannelsLastSlice<scalar_t> slice(image);
    for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
      const int64_t slice_c = std::min(kChunk, C - c0);
      slice.load(c0, slice_c);
      at::parallel_for(0, K, grain_for(cells * slice_c), [&](int64_t begin, int64_t end) {
        std::vector<T> fy(cells * slice_c), fx(cells * slice_c);
        for (int64_t k = begin; k < end; ++k) {
          crop_box_grad_box(tab.ys.data() + k * crop_height, tab.xs.data() + k * crop_width, crop_height,
                            crop_width, slice.image(idx[k]), W, slice.stride(), slice_c, g + k * gs_k + c0 * gs_c,
                            gs_c, gs_y, gs_x, fy.data(), fx.data(), sums[k]);
        }
      });
    }
    scalar_t* gb = grad_boxes.mutable_data_ptr<scalar_t>();
    for (int64_t k = 0; k < K; ++k) {
      for (int j = 0; j < 4; ++j) gb[k * 4 + j] = static_cast<scalar_t>(sums[k][j]);
    }
  });
  return grad_boxes;
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CPU, m) {
  m.impl("crop_and_resize_forward", TORCH_FN(crop_and_resize_forward_cpu));
  m.impl("crop_and_resize_backward_input", TORCH_FN(crop_and_resize_backward_input_cpu));
  m.impl("crop_and_resize_backward_boxes", TORCH_FN(crop_and_resize_backward_boxes_cpu));
}

}  // namespace impls
