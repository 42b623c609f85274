// The gpt example's model: a small decoder-only transformer over characters, written with
// cohort's tensor-parallel layers so that one definition runs at any tp (a group of one is the
// plain model) and cut into pipeline stages by whole units:
//   unit 0          token embedding (VocabParallelEmbedding) + learned positions
//   units 1..L      blocks: pre-LayerNorm causal self-attention (q, k, v ColumnParallel without
//                   gather, heads split across tp; out projection RowParallel) and an MLP
//                   (ColumnParallel 4x -> GELU -> RowParallel), each with a residual
//   unit L + 1      final LayerNorm and the vocabulary head (ColumnParallel, gathered logits)
// Every rank constructs every unit in this order (same seed, same RNG draws: the shards at any
// tp and pp put together are the one-process model) and keeps the units of its stage, under
// their names in the whole model ("block2.fc1.weight"), so snapshots map between layouts.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/process_group.h"
#include "runtime/torch_fwd.h"

namespace cohort::examples {

struct GptConfig {
  int64_t vocab = 128;
  int64_t dim = 64;
  int64_t heads = 4;
  int64_t layers = 4;
  int64_t context = 64;
  int Units() const { return static_cast<int>(layers) + 2; }
};

// The first unit of each of pp stages, balanced by unit count (the embedding and the head
// count as one unit each); boundaries[s] is where stage s + 1 begins.
std::vector<int> GptBoundaries(const GptConfig& config, int pp);

// This rank's stage: units [first, end). Forward takes token ids [b, T] on the first stage
// (else the previous stage's activations [b, T, dim]) and returns activations, or logits
// [b, T, vocab] on the last stage. Throws InvalidArgument when tp does not divide heads, dim,
// 4 * dim or vocab (naming the flag to change).
std::shared_ptr<torch::nn::Module> MakeGptStage(const GptConfig& config,
                                                std::shared_ptr<runtime::ProcessGroup> tp,
                                                int first, int end);
// The stage's forward (the module must come from MakeGptStage).
at::Tensor GptStageForward(torch::nn::Module& stage, const at::Tensor& input);

}  // namespace cohort::examples
