// Keeping freed memory in the heap. glibc serves large blocks with a fresh mmap and unmaps them
// on free, so code that allocates a big temporary per call (Open MPI's all-reduce, libtorch's
// convolution buffers) page-faults it in again every time; measured here, 64 MiB MPI all-reduces
// ran at 0.36 GB/s instead of 3.7, and a libtorch evaluation step spent 2.4x the CPU.
#pragma once

namespace cohort {

// Serves every block from the heap (M_MMAP_MAX 0) and trims it only past 1 GiB, so the next
// call reuses warm memory. Returns false when mallopt refused; callers warn in their own terms.
bool KeepFreedMemory();

}  // namespace cohort
