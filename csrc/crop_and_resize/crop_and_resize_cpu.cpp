// crop_and_resize on the CPU: TensorFlow's sampling rule (csrc/common/bilinear.h), mirroring
// impls/ops/crop_and_resize/reference.py.
//
// The entry points: argument checks, the output in the input's layout, and the sample tables (one row per crop row
// and column of every box, crop_and_resize_tables.h), then the kernels of that layout, each reading the tensors in
// place: crop_and_resize_planes.h for NCHW, crop_and_resize_channels_last.h for channels_last. Neither copies a map.
// Float64 equals impls/backends/reference.py bit for bit: same expressions, same order, no FP contraction (setup.py);
// the image gradient is deterministic and independent of the thread count in both layouts.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <array>
#include <vector>

#include "common/checks.h"
#include "common/cpu_common.h"
#include "crop_and_resize/crop_and_resize_channels_last.h"
#include "crop_and_resize/crop_and_resize_planes.h"
#include "crop_and_resize/crop_and_resize_tables.h"

namespace impls {
namespace {

// A 4-d tensor's strides, e.g. (C * ch * cw, ch * cw, cw, 1) for a contiguous gradient.
std::array<int64_t, 4> strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

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
  const bool fresh_out = pages_are_fresh(out);
  advise_huge_pages(out);
  const bool nearest = method == "nearest";

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "crop_and_resize_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const int64_t* idx = box_index.const_data_ptr<int64_t>();
    const scalar_t* im = image.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const CropTables<scalar_t, T> tab(boxes.const_data_ptr<scalar_t>(), K, crop_height, crop_width, H, W);
    const scalar_t ext = static_cast<scalar_t>(extrapolation_value);
    if (channels_last) {
      crop_forward_channels_last(tab, idx, im, K, C, H, W, crop_height, crop_width, nearest, ext, fresh_out, o);
    } else {
      std::vector<int64_t> order, start;
      boxes_by_image(idx, K, N, order, start);
      crop_forward_planes(tab, idx, order, start, im, N, C, H, W, crop_height, crop_width, nearest, ext, o);
    }
  });
  return out;
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
  const bool fresh_gi = pages_are_fresh(grad_image);
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
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_image.mutable_data_ptr<scalar_t>();
    const bool nearest = method == "nearest";
    // NCHW: banded through a channels-last scratch where the taps outnumber the pixels (crop_and_resize_planes.h).
    if (!channels_last && !dense_taps(K, crop_height, crop_width, N, C, H, W)) {
      crop_image_grad_planes(tab, order, start, g, strides_of(grad), N, C, H, W, crop_height, crop_width, nearest,
                             gi);
      return;
    }
    std::vector<std::array<int64_t, 2>> rows(K);
    for (int64_t k = 0; k < K; ++k) rows[k] = axis_span(tab.ys.data() + k * crop_height, crop_height, nearest);
    const ImageGradCall<scalar_t, T> call{tab, g, grad.stride(0), grad.stride(1), grad.stride(2), grad.stride(3),
                                          crop_height, crop_width, C, W, H * W, nearest,
                                          grad.is_contiguous(at::MemoryFormat::ChannelsLast), order, start, rows};
    crop_image_grad_banded(call, N, K, /*planes=*/!channels_last, fresh_gi, gi);
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
  // As in the forward: a strided image (neither NCHW nor channels_last) is copied once to NCHW.
  const at::Tensor image = image_.is_contiguous(at::MemoryFormat::ChannelsLast) ? image_ : image_.contiguous();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "crop_and_resize_backward_boxes_cpu",
                                  [&] {
    using T = at::opmath_type<scalar_t>;
    const int64_t* idx = box_index.const_data_ptr<int64_t>();
    const scalar_t* im = image.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const CropTables<scalar_t, T> tab(boxes.const_data_ptr<scalar_t>(), K, crop_height, crop_width, H, W);
    std::vector<std::array<T, 4>> sums(K, {T(0), T(0), T(0), T(0)});  // d y1, d x1, d y2, d x2
    if (image.is_contiguous(at::MemoryFormat::ChannelsLast)) {
      crop_box_grad_channels_last(tab, idx, im, g, strides_of(grad), K, C, H, W, crop_height, crop_width, sums);
    } else {
      std::vector<int64_t> order, start;
      boxes_by_image(idx, K, N, order, start);
      crop_box_grad_planes(tab, idx, order, im, g, strides_of(grad), C, H, W, crop_height, crop_width, sums);
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
