// Operator schemas, defined once; csrc/<op>/ kernel files each register their CPU or CUDA kernels for them.
// Sizes are arguments (as in torchvision) so fake kernels and torch.compile know the output shapes.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import impls._C` loads this library, which runs the TORCH_LIBRARY registrations below; the module itself
// has no Python functions: everything is reached through torch.ops.impls.*.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "impls C++/CUDA kernels, registered as torch.ops.impls.*", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}

// Each gradient is its own operator, as torchvision's _roi_align_backward: the input gradient takes the input's
// sizes (batch_size, channels, height, width), not its values; only the box gradient reads the feature map.
TORCH_LIBRARY(impls, m) {
  m.def(
      "crop_and_resize_forward(Tensor image, Tensor boxes, Tensor box_index, SymInt crop_height, "
      "SymInt crop_width, str method, float extrapolation_value) -> Tensor");
  m.def(
      "crop_and_resize_backward_input(Tensor grad, Tensor boxes, Tensor box_index, SymInt crop_height, "
      "SymInt crop_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, str method) -> Tensor");
  m.def(
      "crop_and_resize_backward_boxes(Tensor grad, Tensor image, Tensor boxes, Tensor box_index, "
      "SymInt crop_height, SymInt crop_width, str method) -> Tensor");
  m.def(
      "roi_align_forward(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_align_backward_input(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, "
      "bool aligned) -> Tensor");
  m.def(
      "roi_align_backward_boxes(Tensor grad, Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  // Multi-level (FPN) roi_align: box k is pooled from features[levels[k]] at scales[levels[k]]; the input gradient
  // is one tensor per map. roi_align's CPU and CUDA kernels are its one-level case.
  m.def(
      "multiscale_roi_align_forward(Tensor[] features, Tensor rois, Tensor levels, float[] scales, "
      "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "multiscale_roi_align_backward_input(Tensor grad, Tensor rois, Tensor levels, float[] scales, "
      "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, int[] heights, int[] widths, "
      "int sampling_ratio, bool aligned) -> Tensor[]");
  m.def(
      "multiscale_roi_align_backward_boxes(Tensor grad, Tensor[] features, Tensor rois, Tensor levels, "
      "float[] scales, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
}
