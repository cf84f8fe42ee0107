// The module `impls._C`. It has no Python functions: loading it runs the TORCH_LIBRARY_IMPL registrations of every
// csrc/<op>/ kernel file, and the kernels are reached as torch.ops.impls.*. The operators' schemas are not here:
// each is defined once, in Python, by its operator's spec (impls/ops/<op>/spec.py; the value statistics' by its
// arguments.py); the dispatcher accepts a kernel registered before its schema and checks the two against each other
// when both are there.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "impls C++/CUDA kernels, registered as torch.ops.impls.*", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}
