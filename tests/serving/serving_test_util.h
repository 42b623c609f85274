// Helpers for tests/serving: the two Pythons that check our output as real clients would
// (Debian's python3-torch loading model.pt; a Python with jsonschema validating the
// InferenceService against KServe's CRD), and raw float files to pass tensors between them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cohort::serving::testing {

// A fresh empty directory under /tmp for one test.
std::string TempDir(const std::string& name);
void WriteFile(const std::string& path, const std::string& bytes);
std::string ReadFile(const std::string& path);

// Runs model_path's forward() on input (float32, shape) in Debian's python3-torch
// (torch.jit.load); returns its float32 output. Fails the test (and returns {}) on error.
std::vector<float> PythonOutputs(const std::string& model_path, const std::vector<float>& input,
                                 const std::vector<int64_t>& shape);

// Validates InferenceService YAML against the vendored schemas (tests/k8s/schemas) (strict): ""
// when valid, else the validator's error lines.
std::string ValidateInferenceService(const std::string& yaml);

// The number of lines in text (a trailing newline does not start one).
int Lines(const std::string& text);

// Fashion-MNIST's skeleton as the build scripts it.
std::string SkeletonPath();

}  // namespace cohort::serving::testing
